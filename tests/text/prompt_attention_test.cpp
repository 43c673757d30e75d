// The webui's emphasis syntax: closed forms for each rule, and every prompt of the goldens parsed
// exactly as tests/goldens/prompt_attention.py (the Python reimplementation) parses it.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/prompt_attention.h"

namespace otter {
namespace {

using Pieces = std::vector<AttentionPiece>;
constexpr double kBreak = -1e300;  // marks a BREAK in the expected pieces

void expect_pieces(const std::string& prompt, const std::vector<std::pair<std::string, double>>& want) {
  const Pieces got = parse_prompt_attention(prompt);
  ASSERT_EQ(got.size(), want.size()) << prompt;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i].second == kBreak) {
      EXPECT_TRUE(got[i].is_break) << prompt << " piece " << i;
      continue;
    }
    EXPECT_FALSE(got[i].is_break) << prompt << " piece " << i;
    EXPECT_EQ(got[i].text, want[i].first) << prompt << " piece " << i;
    EXPECT_EQ(got[i].weight, want[i].second) << prompt << " piece " << i;  // the same products, in the same order
  }
}

TEST(PromptAttention, EachRule) {
  expect_pieces("a cat", {{"a cat", 1.0}});
  expect_pieces("", {{"", 1.0}});
  expect_pieces("a (cat)", {{"a ", 1.0}, {"cat", 1.1}});
  expect_pieces("((cat))", {{"cat", 1.1 * 1.1}});
  expect_pieces("[cat]", {{"cat", 1.0 / 1.1}});
  expect_pieces("(cat:1.3) dog", {{"cat", 1.3}, {" dog", 1.0}});
  expect_pieces("( cat : -0.5 )", {{" cat ", -0.5}});
  expect_pieces("((cat:2))", {{"cat", 2 * 1.1}});
  expect_pieces("[(cat)]", {{"cat", 1.1 * (1.0 / 1.1)}});
  // Unclosed brackets apply to the rest, in the order they were opened.
  expect_pieces("a (cat [dog", {{"a ", 1.0}, {"cat ", 1.1}, {"dog", 1.1 * (1.0 / 1.1)}});
  // A stray closing bracket, a colon and a weight without an open bracket are text.
  expect_pieces("a) b] c: d:1.2)", {{"a) b] c: d:1.2)", 1.0}});
  // Escapes: the character itself, unweighted; a lone backslash is dropped.
  expect_pieces("\\(a\\) \\[b\\] \\\\ c\\d", {{"(a) [b] \\ cd", 1.0}});
  expect_pieces("(\\(x\\))", {{"(x)", 1.1}});
  // Equal neighbours merge: (a)(b) is one piece.
  expect_pieces("(a)(b) c", {{"ab", 1.1}, {" c", 1.0}});
}

TEST(PromptAttention, BreakIsAWholeCapitalWord) {
  expect_pieces("a BREAK b", {{"a", 1.0}, {"", kBreak}, {"b", 1.0}});
  expect_pieces("BREAK", {{"", 1.0}, {"", kBreak}, {"", 1.0}});
  expect_pieces("aBREAK b break c BREAKS éBREAK", {{"aBREAK b break c BREAKS éBREAK", 1.0}});
  expect_pieces("x,BREAK,y", {{"x,", 1.0}, {"", kBreak}, {",y", 1.0}});
  // Inside brackets it still breaks (the webui would weight its marker and lose the break).
  expect_pieces("(a BREAK b)", {{"a", 1.1}, {"", kBreak}, {"b", 1.1}});
}

TEST(PromptAttention, PlainPromptsAreRecognised) {
  EXPECT_TRUE(is_plain_attention(parse_prompt_attention("a red circle, on blue")));
  EXPECT_TRUE(is_plain_attention(parse_prompt_attention("a \\(red\\) circle")));
  EXPECT_FALSE(is_plain_attention(parse_prompt_attention("a (red) circle")));
  EXPECT_FALSE(is_plain_attention(parse_prompt_attention("a BREAK b")));
  EXPECT_FALSE(is_plain_attention(parse_prompt_attention("(a:1)BREAK")));
}

TEST(PromptAttention, WeightThatIsNotANumberIsAnError) {
  for (const char* bad : {"(a:1.2.3)", "(a:.)", "(a:-.)"}) {
    try {
      (void)parse_prompt_attention(bad);
      ADD_FAILURE() << bad << " parsed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not a number"), std::string::npos) << e.what();
    }
  }
}

TEST(PromptAttention, GoldenPromptsParseAsThePythonReference) {
  std::ifstream in(std::string(OTTER_PROJECT_GOLDEN_DIR) + "/prompt_weighting.json");
  ASSERT_TRUE(in) << "tests/goldens/prompt_weighting.json";
  const nlohmann::json manifest = nlohmann::json::parse(in);
  int checked = 0;
  for (const auto& c : manifest["cases"]) {
    std::vector<std::pair<std::string, double>> want;
    for (const auto& p : c["pieces"])
      want.emplace_back(p["text"].get<std::string>(), p["break"].get<bool>() ? kBreak : p["weight"].get<double>());
    expect_pieces(c["prompt"].get<std::string>(), want);
    ++checked;
  }
  EXPECT_GE(checked, 7);
}

}  // namespace
}  // namespace otter

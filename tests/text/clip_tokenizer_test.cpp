// Behaviour of ClipTokenizer beyond the goldens: long prompts (truncation warning, chunking),
// special-token literals, decode, thread safety and the pad override.
#include "text/clip_tokenizer.h"

#include <gtest/gtest.h>

#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "support/shared_data.h"

namespace otter {
namespace {

class ClipTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (const auto dir = ::otter::testing::shared_dir())
      tokenizer_ = std::make_unique<ClipTokenizer>(ClipTokenizer::load(*dir / "tokenizer" / "clip"));
  }
  static void TearDownTestSuite() { tokenizer_.reset(); }
  void SetUp() override {
    if (!tokenizer_) GTEST_SKIP() << "reference data ../shared not found (set OTTER_SHARED_DIR)";
  }
  const ClipTokenizer& tok() const { return *tokenizer_; }
  static std::unique_ptr<ClipTokenizer> tokenizer_;
};
std::unique_ptr<ClipTokenizer> ClipTokenizerTest::tokenizer_;

TokenizeOptions options(LongPrompt long_prompt, std::optional<int> pad_id = std::nullopt, bool warn = true) {
  TokenizeOptions o;
  o.long_prompt = long_prompt;
  o.pad_id = pad_id;
  o.warn = warn;
  return o;
}

// "cat" is one token, so n copies give exactly n ids.
std::string cats(int n) {
  std::string text;
  for (int i = 0; i < n; ++i) text += i == 0 ? "cat" : " cat";
  return text;
}

TEST_F(ClipTokenizerTest, ShortPromptIsNotTruncatedAndWarnsNothing) {
  ::testing::internal::CaptureStderr();
  const TokenizedPrompt p = tok().tokenize(cats(75));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_FALSE(p.truncated);
  EXPECT_EQ(p.ids.size(), 75u);
  EXPECT_EQ(p.windows[0][76], tok().eos_id());
  EXPECT_TRUE(p.cut_text.empty());
}

TEST_F(ClipTokenizerTest, TruncationKeepsTheFirst75AndWarnsWithTheCutText) {
  const std::string text = cats(75) + " dog on a red sofa";
  ::testing::internal::CaptureStderr();
  const TokenizedPrompt p = tok().tokenize(text);
  const std::string warning = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(warning, "warning: prompt truncated: 80 tokens, the model sees 75; cut text: 'dog on a red sofa'\n");
  EXPECT_TRUE(p.truncated);
  EXPECT_EQ(p.cut_text, "dog on a red sofa");
  ASSERT_EQ(p.windows.size(), 1u);
  const int cat_id = p.ids[0];
  EXPECT_EQ(p.windows[0][0], tok().bos_id());
  for (int i = 1; i <= 75; ++i) EXPECT_EQ(p.windows[0][static_cast<size_t>(i)], cat_id);
  EXPECT_EQ(p.windows[0][76], tok().eos_id());

  ::testing::internal::CaptureStderr();
  (void)tok().tokenize(text, options(LongPrompt::truncate, std::nullopt, false));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST_F(ClipTokenizerTest, ChunkingSplitsInto75IdWindowsThatConcatenateBackToTheIds) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "a beautiful landscape, mountains and rivers, " + std::to_string(i) + "; ";
  const std::vector<int> ids = tok().encode(text);
  ASSERT_GT(ids.size(), 150u);
  const int pad = 0;
  ::testing::internal::CaptureStderr();
  const TokenizedPrompt p = tok().tokenize(text, options(LongPrompt::chunk, pad));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");  // nothing is lost, nothing to warn about
  EXPECT_FALSE(p.truncated);
  EXPECT_EQ(p.ids, ids);
  ASSERT_EQ(p.windows.size(), (ids.size() + 74) / 75);
  std::vector<int> joined;
  for (size_t w = 0; w < p.windows.size(); ++w) {
    const ClipWindow& win = p.windows[w];
    EXPECT_EQ(win[0], tok().bos_id());
    const size_t n = std::min<size_t>(75, ids.size() - 75 * w);
    joined.insert(joined.end(), win.begin() + 1, win.begin() + 1 + static_cast<ptrdiff_t>(n));
    EXPECT_EQ(win[n + 1], tok().eos_id()) << "window " << w;
    for (size_t k = n + 2; k < win.size(); ++k) EXPECT_EQ(win[k], pad) << "window " << w << " position " << k;
  }
  EXPECT_EQ(joined, ids);
}

TEST_F(ClipTokenizerTest, ChunkingAnExact75IdPromptGivesOneFullWindow) {
  const TokenizedPrompt p = tok().tokenize(cats(150), options(LongPrompt::chunk));
  ASSERT_EQ(p.windows.size(), 2u);
  EXPECT_EQ(p.windows[1][76], tok().eos_id());
}

TEST_F(ClipTokenizerTest, EmptyPromptGivesOneWindowInBothModes) {
  for (const LongPrompt mode : {LongPrompt::truncate, LongPrompt::chunk}) {
    const TokenizedPrompt p = tok().tokenize("  \t ", options(mode));
    ASSERT_EQ(p.windows.size(), 1u);
    EXPECT_TRUE(p.ids.empty());
    EXPECT_EQ(p.windows[0][0], 49406);
    EXPECT_EQ(p.windows[0][1], 49407);
    for (size_t k = 2; k < 77; ++k) EXPECT_EQ(p.windows[0][k], tok().pad_id());
  }
}

TEST_F(ClipTokenizerTest, SpecialTokenLiteralsBecomeTheirIds) {
  EXPECT_EQ(tok().encode("<|startoftext|>"), std::vector<int>({49406}));
  EXPECT_EQ(tok().encode("<|endoftext|>"), std::vector<int>({49407}));
  EXPECT_EQ(tok().encode("<|EndOfText|>"), std::vector<int>({49407}));  // lower-cased first
  const std::vector<int> a = tok().encode("a"), b = tok().encode("b");
  EXPECT_EQ(tok().encode("a<|endoftext|>b"), std::vector<int>({a[0], 49407, b[0]}));
  // Glued to other punctuation it is not a literal: "[^\s\p{L}\p{N}]+" takes ".<|" first.
  const std::vector<int> glued = tok().encode(".<|endoftext|>");
  EXPECT_EQ(std::count(glued.begin(), glued.end(), 49407), 0);
}

TEST_F(ClipTokenizerTest, DecodeUndoesEncodeForCleanLowerCaseText) {
  const std::string text = "a watercolor painting of an otter résumé 🐱 日本語";
  EXPECT_EQ(tok().decode(tok().encode(text)), text + " ");  // each word ends with "</w>" -> ' '
}

TEST_F(ClipTokenizerTest, TokenLookupAndPadOverride) {
  EXPECT_EQ(tok().token_id("!"), 0);
  EXPECT_EQ(tok().token_id("<|endoftext|>"), 49407);
  EXPECT_FALSE(tok().token_id("not a token").has_value());
  EXPECT_THROW((void)tok().tokenize("x", options(LongPrompt::truncate, 49408)), Error);
  EXPECT_THROW((void)tok().decode(std::vector<int>{-1}), Error);
}

TEST_F(ClipTokenizerTest, InvalidUtf8IsAnError) {
  try {
    (void)tok().encode("caf\xc3");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("byte offset 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)tok().encode("\xed\xa0\x80"), Error);  // an encoded surrogate
  EXPECT_THROW((void)tok().encode("\xc0\xaf"), Error);      // overlong '/'
}

TEST_F(ClipTokenizerTest, ConcurrentEncodingAgreesWithSerial) {
  std::vector<std::string> prompts;
  for (int i = 0; i < 64; ++i)
    prompts.push_back("prompt number " + std::to_string(i * 7919) + " with words w" + std::to_string(i));
  std::vector<std::vector<int>> serial;
  for (const auto& p : prompts) serial.push_back(tok().encode(p));
  std::vector<std::vector<std::vector<int>>> results(4, std::vector<std::vector<int>>(prompts.size()));
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < prompts.size(); ++i) results[t][i] = tok().encode(prompts[(i + t * 13) % prompts.size()]);
    });
  }
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < results.size(); ++t)
    for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(results[t][i], serial[(i + t * 13) % prompts.size()]);
}

}  // namespace
}  // namespace otter

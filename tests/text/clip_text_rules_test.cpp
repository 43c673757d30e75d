// The text rules before BPE, against values printed by CPython 3.11 (html.unescape, str.lower,
// regex.findall with CLIP's pattern): each case here is one rule the goldens touch only lightly.
#include "text/clip_text_rules.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "text/html_entities.h"
#include "text/html_unescape.h"
#include "text/utf8.h"

namespace otter {
namespace {

std::string unescape(const std::string& text) { return utf8::encode(html_unescape(utf8::decode(text))); }
std::string normalize(const std::string& text) { return utf8::encode(clip_normalize(utf8::decode(text))); }
std::vector<std::string> split(const std::string& text) { return clip_split(utf8::decode(text)); }

TEST(HtmlUnescape, MatchesPythonHtmlUnescape) {
  EXPECT_EQ(unescape("&amp;amp;"), "&amp;");    // one level per call
  EXPECT_EQ(unescape("&notit;"), "\u00ACit;");  // longest known prefix, legacy name without ';'
  EXPECT_EQ(unescape("&copyx"), "\u00A9x");
  EXPECT_EQ(unescape("&AMP"), "&");
  EXPECT_EQ(unescape("&lt&gt"), "<>");
  EXPECT_EQ(unescape("&acE;"), "\u223E\u0333");  // two code points
  EXPECT_EQ(unescape("&#65;&#x41;&#X41"), "AAA");
  EXPECT_EQ(unescape("&#128;"), "\u20AC");  // HTML5's Windows-1252 remapping
  EXPECT_EQ(unescape("&#x0d;"), "\r");
  EXPECT_EQ(unescape("&#0;"), "\uFFFD");
  EXPECT_EQ(unescape("&#x110000;"), "\uFFFD");
  EXPECT_EQ(unescape("&#xD800;"), "\uFFFD");
  EXPECT_EQ(unescape("&#99999999999999999999999;"), "\uFFFD");
  EXPECT_EQ(unescape("&#1;"), "");  // forbidden code points vanish
  for (const std::string& kept :
       std::vector<std::string>{"&#", "&#x;", "&;", "a&b", "&\u00E9;", "&" + std::string(40, 'a') + ";"})
    EXPECT_EQ(unescape(kept), kept);
}

TEST(HtmlUnescape, TableIsPythonsHtml5Table) {
  EXPECT_EQ(html::named_references().size(), 2231u);
  EXPECT_EQ(html::remapped_numbers().size(), 34u);
  EXPECT_EQ(html::dropped_code_points().size(), 126u);
  const auto named = html::named_references();
  for (size_t i = 1; i < named.size(); ++i) EXPECT_LT(named[i - 1].name, named[i].name) << "not sorted at " << i;
}

TEST(ClipNormalize, WhitespaceStripAndLowerCase) {
  EXPECT_EQ(normalize("  A\u00A0\u00A0B\t\n C\u3000"), "a b c");
  EXPECT_EQ(normalize("\x1c"
                      "a\x1c"
                      "b\x1c"),
            "a\x1c"
            "b");                                              // strip() drops U+001C, \s does not match it
  EXPECT_EQ(normalize("zero\u200Bwidth"), "zero\u200Bwidth");  // not whitespace
  EXPECT_EQ(normalize("&nbsp;x&amp;nbsp;"), "x");              // unescaped twice, then stripped
  EXPECT_EQ(normalize("\u03A3\u0391\u03A3 \u03A3"), "\u03C3\u03B1\u03C2 \u03C3");  // final sigma
  EXPECT_EQ(normalize("\u0130"), "i\u0307");                                       // full lower-case mapping
  EXPECT_EQ(normalize("\u1F48\u0394\u03A5\u03A3\u03A3\u0395\u038E\u03A3"),
            "\u1F40\u03B4\u03C5\u03C3\u03C3\u03B5\u03CD\u03C2");
}

TEST(ClipSplit, MatchesPythonRegexFindall) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split("x.<|endoftext|>"), V({"x", ".<|", "endoftext", "|>"}));
  EXPECT_EQ(split("a <|endoftext|>b"), V({"a", "<|endoftext|>", "b"}));
  EXPECT_EQ(split("12ab"), V({"1", "2", "ab"}));
  EXPECT_EQ(split("don't"), V({"don", "'t"}));
  EXPECT_EQ(split("rock 'n' roll"), V({"rock", "'", "n", "'", "roll"}));
  EXPECT_EQ(split("'\u017F x"), V({"'\u017F", "x"}));         // IGNORECASE: long s folds to 's'
  EXPECT_EQ(split("a\u0345b"), V({"a", "b"}));                // U+0345 matches no alternative
  EXPECT_EQ(split("\u217B\u00BD"), V({"\u217B", "\u00BD"}));  // \p{N}, one per piece
  EXPECT_EQ(split("a\u0307"), V({"a", "\u0307"}));
  EXPECT_EQ(split("\x1c!"), V({"\x1c!"}));
  EXPECT_TRUE(split("").empty());
}

}  // namespace
}  // namespace otter

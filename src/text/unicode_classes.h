#pragma once
// The character classes of OpenAI's CLIP text rules, as Python defines them, on top of ICU's
// Unicode data. Two different "whitespace" sets are in play: str.strip() uses str.isspace(),
// the `regex` module's \s is the White_Space property (they differ in U+001C..U+001F).
#include <string>
#include <string_view>

namespace otter::unicode {

bool is_python_space(char32_t c);  // str.isspace(): bidi class WS/B/S or general category Zs
bool is_regex_space(char32_t c);   // regex \s: White_Space
bool is_letter(char32_t c);        // \p{L}
bool is_number(char32_t c);        // \p{N}

// [^\s\p{L}\p{N}] under regex.IGNORECASE: besides the three classes, the module also refuses a
// character one of whose simple case mappings is in them (U+0345 COMBINING GREEK YPOGEGRAMMENI,
// whose upper case is a Greek letter), so such a character is matched by no alternative at all.
bool is_other_symbol(char32_t c);

// Simple case folding, as regex.IGNORECASE compares literal characters ("'ſ" matches "'s").
char32_t fold_case(char32_t c);

// str.lower(): full Unicode lower-case mapping, including "İ" -> "i̇" and the context-dependent
// final sigma, without any locale tailoring.
std::u32string to_lower(std::u32string_view text);

}  // namespace otter::unicode

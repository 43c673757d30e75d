#pragma once
// Python's html.unescape, code point for code point: OpenAI's CLIP tokenizer runs every prompt
// through it twice, so "&amp;amp;" becomes "&" and "&notit;" becomes "¬it;" for SD too.
#include <string>
#include <string_view>

namespace otter {

// Replaces every character reference the way CPython's html module does (its regex
// &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?), scanned left to right without rescanning
// replacements): numeric references (HTML5 remapping of 0x80-0x9F, U+FFFD for surrogates and
// out-of-range numbers, nothing for the code points HTML5 forbids) and named references, including
// the longest known prefix of an unknown name ("&notanentity;" -> "¬anentity;").
std::u32string html_unescape(std::u32string_view text);

}  // namespace otter

#pragma once
// UTF-8 <-> code points for the tokenizer. Prompts arrive as UTF-8 bytes (argv, JSON); the CLIP
// text rules (html un-escaping, whitespace, case, the split regex) are defined on code points, and
// BPE works on the UTF-8 bytes again.
#include <string>
#include <string_view>

namespace otter::utf8 {

// Strict decoding: overlong forms, surrogates and values past U+10FFFF are rejected with an
// otter::Error naming `what` and the byte offset, because Python (which made the goldens) could
// never have held such text in a str.
std::u32string decode(std::string_view bytes, std::string_view what = "text");

void append(std::string& out, char32_t code_point);
std::string encode(std::u32string_view code_points);

// Lenient decoding for display: each invalid byte becomes U+FFFD (like Python's errors="replace").
std::string sanitize(std::string_view bytes);

}  // namespace otter::utf8

#pragma once
// Steps 1-4 of OpenAI's CLIP tokenizer (simple_tokenizer.py, run without ftfy, which is what the
// goldens in ../shared use): clean the prompt, lower-case it and cut it into the pieces that BPE
// then encodes one by one.
#include <string>
#include <string_view>
#include <vector>

namespace otter {

// html.unescape twice, strip, every run of \s by one space, strip, str.lower().
std::u32string clip_normalize(std::u32string_view text);

// re.findall with
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// under regex.IGNORECASE, as a hand-written scanner: at each position the first alternative that
// matches wins (each `+` takes the longest run), and a character no alternative matches
// (whitespace) is skipped. Digits come out one per piece. Pieces are returned as UTF-8.
std::vector<std::string> clip_split(std::u32string_view normalized);

}  // namespace otter

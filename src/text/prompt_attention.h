#pragma once
// Prompt weighting in the AUTOMATIC1111 webui's syntax (its prompt_parser.parse_prompt_attention):
//
//   (word)        weight × 1.1            ((word)) × 1.21, and so on
//   [word]        weight ÷ 1.1
//   (word:1.3)    weight × 1.3            any number: (word:0.5), (word:-1)
//   \( \) \[ \] \\   the bracket or backslash itself, unweighted (a lone "\" is dropped)
//   BREAK         (a whole word, capitals) starts a new 75-token chunk
//
// A bracket left open applies to the rest of the prompt; a closing bracket with nothing open is
// plain text; neighbouring pieces of equal weight are merged. The weights multiply the text
// encoder's output per token, and the output's mean is then restored (pipeline/stable_diffusion.h).
// Unlike the webui, a BREAK inside brackets still breaks (the webui weights it, which turns it into
// the word "break"), and a weight that is not a number (":1.2.3)") is an error (the webui fails).
#include <string>
#include <string_view>
#include <vector>

namespace otter {

struct AttentionPiece {
  std::string text;
  double weight = 1.0;
  bool is_break = false;  // BREAK: a new chunk starts here (text empty)
};

std::vector<AttentionPiece> parse_prompt_attention(std::string_view prompt);

// Whether the pieces are one unweighted text without BREAK: the prompt then encodes exactly as
// plain text (its escapes removed: `plain_text`).
bool is_plain_attention(const std::vector<AttentionPiece>& pieces);

}  // namespace otter

#include "text/prompt_attention.h"

#include <charconv>
#include <cstdlib>

#include "core/error.h"
#include "text/unicode_classes.h"
#include "text/utf8.h"

namespace otter {
namespace {

constexpr double kRoundMultiplier = 1.1;
constexpr double kSquareMultiplier = 1.0 / 1.1;

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Python's regex \w at a code point (letters, digits, underscore; Unicode-aware like Python 3's re).
bool is_word_char(char32_t c) { return c == U'_' || unicode::is_letter(c) || unicode::is_number(c); }

// The code point ending just before byte `i`, and the one starting at `i` (0 if none).
char32_t code_point_before(std::string_view s, size_t i) {
  if (i == 0) return 0;
  size_t start = i - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && i - start < 4) --start;
  const std::u32string cps = utf8::decode(utf8::sanitize(s.substr(start, i - start)));
  return cps.empty() ? 0 : cps.back();
}

char32_t code_point_at(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  const std::u32string cps = utf8::decode(utf8::sanitize(s.substr(i, std::min<size_t>(4, s.size() - i))));
  return cps.empty() ? 0 : cps.front();
}

// re.split(r"\s*\bBREAK\b\s*", text): the text between the whole-word BREAKs (empty pieces kept).
std::vector<std::string> split_at_break(std::string_view text) {
  std::vector<std::string> parts;
  size_t piece_start = 0, search = 0;
  while (true) {
    const size_t at = text.find("BREAK", search);
    if (at == std::string_view::npos) break;
    const size_t end = at + 5;
    if (is_word_char(code_point_before(text, at)) || is_word_char(code_point_at(text, end))) {
      search = at + 1;
      continue;
    }
    size_t cut = at;
    while (cut > piece_start && is_ascii_space(text[cut - 1])) --cut;
    parts.emplace_back(text.substr(piece_start, cut - piece_start));
    size_t next = end;
    while (next < text.size() && is_ascii_space(text[next])) ++next;
    piece_start = search = next;
  }
  parts.emplace_back(text.substr(piece_start));
  return parts;
}

bool is_special(char c) { return c == '\\' || c == '(' || c == ')' || c == '[' || c == ']' || c == ':'; }

// At `i` (a ':'): the ":\s*([+-]?[.\d]+)\s*\)" alternative; its length and number text, or 0.
size_t match_weight(std::string_view s, size_t i, std::string_view& number) {
  size_t j = i + 1;
  while (j < s.size() && is_ascii_space(s[j])) ++j;
  const size_t num_start = j;
  if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
  const size_t digits_start = j;
  while (j < s.size() && (s[j] == '.' || (s[j] >= '0' && s[j] <= '9'))) ++j;
  if (j == digits_start) return 0;
  number = s.substr(num_start, j - num_start);
  while (j < s.size() && is_ascii_space(s[j])) ++j;
  if (j >= s.size() || s[j] != ')') return 0;
  return j + 1 - i;
}

double parse_weight(std::string_view number, std::string_view prompt) {
  // Python's float(): an optional sign, then digits with at most one point.
  std::string_view digits = number;
  if (!digits.empty() && (digits[0] == '+' || digits[0] == '-')) digits.remove_prefix(1);
  double value = 0;
  const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  OTTER_CHECK(r.ec == std::errc() && r.ptr == digits.data() + digits.size() && digits != ".", "prompt weight '",
              number, "' is not a number (in \"", prompt, "\"); write e.g. (word:1.2), or \\( for a literal bracket");
  return number[0] == '-' ? -value : value;
}

}  // namespace

std::vector<AttentionPiece> parse_prompt_attention(std::string_view prompt) {
  std::vector<AttentionPiece> res;
  std::vector<size_t> round, square;
  const auto multiply_from = [&](size_t start, double m) {
    for (size_t p = start; p < res.size(); ++p)
      if (!res[p].is_break) res[p].weight *= m;
  };
  const auto add_text = [&](std::string_view text) {
    const std::vector<std::string> parts = split_at_break(text);
    for (size_t k = 0; k < parts.size(); ++k) {
      if (k > 0) res.push_back({"", 1.0, true});
      res.push_back({parts[k], 1.0, false});
    }
  };

  size_t i = 0;
  while (i < prompt.size()) {
    const char c = prompt[i];
    if (c == '\\') {
      // "\(", "\)", "\[", "\]", "\\": the character; a lone backslash: nothing.
      if (i + 1 < prompt.size() && (prompt[i + 1] == '(' || prompt[i + 1] == ')' || prompt[i + 1] == '[' ||
                                    prompt[i + 1] == ']' || prompt[i + 1] == '\\')) {
        res.push_back({std::string(1, prompt[i + 1]), 1.0, false});
        i += 2;
      } else {
        res.push_back({"", 1.0, false});
        i += 1;
      }
    } else if (c == '(') {
      round.push_back(res.size());
      ++i;
    } else if (c == '[') {
      square.push_back(res.size());
      ++i;
    } else if (std::string_view number; c == ':' && match_weight(prompt, i, number) > 0) {
      const size_t length = match_weight(prompt, i, number);
      if (!round.empty()) {
        multiply_from(round.back(), parse_weight(number, prompt));
        round.pop_back();
      } else {
        add_text(prompt.substr(i, length));
      }
      i += length;
    } else if (c == ')' && !round.empty()) {
      multiply_from(round.back(), kRoundMultiplier);
      round.pop_back();
      ++i;
    } else if (c == ']' && !square.empty()) {
      multiply_from(square.back(), kSquareMultiplier);
      square.pop_back();
      ++i;
    } else if (c == ')' || c == ']' || c == ':') {
      add_text(prompt.substr(i, 1));
      ++i;
    } else {
      size_t j = i;
      while (j < prompt.size() && !is_special(prompt[j])) ++j;
      add_text(prompt.substr(i, j - i));
      i = j;
    }
  }
  for (size_t p : round) multiply_from(p, kRoundMultiplier);
  for (size_t p : square) multiply_from(p, kSquareMultiplier);
  if (res.empty()) res.push_back({"", 1.0, false});

  // Merge neighbours of equal weight (never across a BREAK).
  std::vector<AttentionPiece> merged;
  for (AttentionPiece& piece : res) {
    if (!merged.empty() && !piece.is_break && !merged.back().is_break && merged.back().weight == piece.weight)
      merged.back().text += piece.text;
    else
      merged.push_back(std::move(piece));
  }
  return merged;
}

bool is_plain_attention(const std::vector<AttentionPiece>& pieces) {
  return pieces.size() == 1 && !pieces[0].is_break && pieces[0].weight == 1.0;
}

}  // namespace otter

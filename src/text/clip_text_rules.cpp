#include "text/clip_text_rules.h"

#include <array>

#include "text/html_unescape.h"
#include "text/unicode_classes.h"
#include "text/utf8.h"

namespace otter {

namespace {

std::u32string_view strip_python_space(std::u32string_view text) {
  size_t begin = 0, end = text.size();
  while (begin < end && unicode::is_python_space(text[begin])) ++begin;
  while (end > begin && unicode::is_python_space(text[end - 1])) --end;
  return text.substr(begin, end - begin);
}

std::u32string collapse_regex_space(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  bool in_run = false;
  for (const char32_t c : text) {
    const bool space = unicode::is_regex_space(c);
    if (space && !in_run) out.push_back(U' ');
    if (!space) out.push_back(c);
    in_run = space;
  }
  return out;
}

// Does `literal` (ASCII, lower case) match text at pos, comparing case-insensitively as the regex
// module does (simple case folding, one code point against one)?
bool matches_literal(std::u32string_view text, size_t pos, std::string_view literal) {
  if (text.size() - pos < literal.size()) return false;
  for (size_t k = 0; k < literal.size(); ++k) {
    const char32_t expected = static_cast<char32_t>(literal[k]);
    if (text[pos + k] != expected && unicode::fold_case(text[pos + k]) != expected) return false;
  }
  return true;
}

// The literal alternatives of the pattern, in the pattern's order.
constexpr std::array<std::string_view, 9> kLiterals = {
    "<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};

// Length of the piece starting at text[pos], or 0 if no alternative matches there.
size_t piece_length(std::u32string_view text, size_t pos) {
  for (const std::string_view literal : kLiterals) {
    if (matches_literal(text, pos, literal)) return literal.size();
  }
  const auto run = [&](bool (*in_class)(char32_t)) {
    size_t end = pos;
    while (end < text.size() && in_class(text[end])) ++end;
    return end - pos;
  };
  if (unicode::is_letter(text[pos])) return run(unicode::is_letter);
  if (unicode::is_number(text[pos])) return 1;
  return run(unicode::is_other_symbol);  // 0 for whitespace and the odd U+0345
}

}  // namespace

std::u32string clip_normalize(std::u32string_view text) {
  const std::u32string unescaped = html_unescape(html_unescape(text));
  const std::u32string collapsed = collapse_regex_space(strip_python_space(unescaped));
  return unicode::to_lower(strip_python_space(collapsed));
}

std::vector<std::string> clip_split(std::u32string_view normalized) {
  std::vector<std::string> pieces;
  size_t pos = 0;
  while (pos < normalized.size()) {
    const size_t length = piece_length(normalized, pos);
    if (length == 0) {
      ++pos;
      continue;
    }
    pieces.push_back(utf8::encode(normalized.substr(pos, length)));
    pos += length;
  }
  return pieces;
}

}  // namespace otter

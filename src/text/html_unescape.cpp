#include "text/html_unescape.h"

#include <algorithm>
#include <optional>

#include "text/html_entities.h"

namespace otter {

namespace {

constexpr size_t kMaxNameLength = 32;  // the {1,32} of Python's pattern

// ASCII digits only: Python's [0-9] and [0-9a-fA-F].
std::optional<unsigned> digit_value(char32_t c, bool hex) {
  if (c >= U'0' && c <= U'9') return static_cast<unsigned>(c - U'0');
  if (hex && c >= U'a' && c <= U'f') return static_cast<unsigned>(c - U'a' + 10);
  if (hex && c >= U'A' && c <= U'F') return static_cast<unsigned>(c - U'A' + 10);
  return std::nullopt;
}

// A character that may appear in a reference name: [^\t\n\f <&#;].
bool is_name_char(char32_t c) {
  return c != U'\t' && c != U'\n' && c != U'\f' && c != U' ' && c != U'<' && c != U'&' && c != U'#' && c != U';';
}

// Python's _replace_charref for a numeric reference. Numbers are saturated: anything past
// U+10FFFF behaves the same (U+FFFD), however many digits it has.
void append_numeric(std::u32string& out, uint64_t number) {
  const auto remapped = html::remapped_numbers();
  const auto r = std::lower_bound(remapped.begin(), remapped.end(), number,
                                  [](const html::RemappedNumber& e, uint64_t n) { return e.number < n; });
  if (r != remapped.end() && r->number == number) {
    out += r->value;
    return;
  }
  if ((number >= 0xD800 && number <= 0xDFFF) || number > 0x10FFFF) {
    out += U'\uFFFD';
    return;
  }
  const auto dropped = html::dropped_code_points();
  if (std::binary_search(dropped.begin(), dropped.end(), static_cast<char32_t>(number))) return;
  out += static_cast<char32_t>(number);
}

std::optional<std::u32string_view> find_named(std::u32string_view name) {
  // Names are ASCII; anything else cannot match.
  std::string ascii;
  ascii.reserve(name.size());
  for (const char32_t c : name) {
    if (c >= 0x80) return std::nullopt;
    ascii.push_back(static_cast<char>(c));
  }
  const auto table = html::named_references();
  const auto it = std::lower_bound(table.begin(), table.end(), std::string_view(ascii),
                                   [](const html::NamedReference& e, std::string_view n) { return e.name < n; });
  if (it != table.end() && it->name == ascii) return it->value;
  return std::nullopt;
}

// Tries to match a reference at text[amp] == '&'. On a match appends its replacement and returns
// the index just past it; otherwise returns nullopt (the '&' is kept as it is).
std::optional<size_t> replace_reference(std::u32string_view text, size_t amp, std::u32string& out) {
  size_t pos = amp + 1;
  const auto skip_semicolon = [&] {
    if (pos < text.size() && text[pos] == U';') ++pos;
  };
  if (pos < text.size() && text[pos] == U'#') {
    ++pos;
    const bool hex = pos < text.size() && (text[pos] == U'x' || text[pos] == U'X');
    if (hex) ++pos;
    const size_t digits_start = pos;
    uint64_t number = 0;
    constexpr uint64_t kSaturated = 0x110000;
    while (pos < text.size()) {
      const auto digit = digit_value(text[pos], hex);
      if (!digit) break;
      number = std::min(kSaturated, number * (hex ? 16 : 10) + *digit);
      ++pos;
    }
    if (pos == digits_start) return std::nullopt;  // "&#", "&#x": '#' may not start a name either
    skip_semicolon();
    append_numeric(out, number);
    return pos;
  }

  while (pos < text.size() && pos - (amp + 1) < kMaxNameLength && is_name_char(text[pos])) ++pos;
  if (pos == amp + 1) return std::nullopt;
  skip_semicolon();
  const std::u32string_view name = text.substr(amp + 1, pos - (amp + 1));
  if (const auto value = find_named(name)) {
    out += *value;
    return pos;
  }
  // Longest known prefix of at least two characters; the rest is kept literally.
  for (size_t length = name.size() - 1; length >= 2; --length) {
    if (const auto value = find_named(name.substr(0, length))) {
      out += *value;
      out += name.substr(length);
      return pos;
    }
  }
  out += U'&';
  out += name;
  return pos;
}

}  // namespace

std::u32string html_unescape(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t amp = text.find(U'&', pos);
    if (amp == std::u32string_view::npos) {
      out += text.substr(pos);
      break;
    }
    out += text.substr(pos, amp - pos);
    if (const auto next = replace_reference(text, amp, out)) {
      pos = *next;
    } else {
      out += U'&';
      pos = amp + 1;
    }
  }
  return out;
}

}  // namespace otter

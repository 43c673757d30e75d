#pragma once
// The data behind Python's html.unescape, generated from Python itself by
// tools/gen_html_entities.py into html_entities_table.cpp (rerun it rather than editing by hand).
#include <span>
#include <string_view>

namespace otter::html {

struct NamedReference {
  std::string_view name;      // ASCII, without the '&', with the ';' where HTML5 spells it so
  std::u32string_view value;  // one or two code points
};

// A numeric reference HTML5 maps elsewhere (&#128; is '€', Windows-1252 style; &#0; is U+FFFD).
struct RemappedNumber {
  char32_t number;
  std::u32string_view value;
};

std::span<const NamedReference> named_references();  // sorted by name, byte order
std::span<const RemappedNumber> remapped_numbers();  // sorted by number
std::span<const char32_t> dropped_code_points();     // sorted; numeric references to these vanish

}  // namespace otter::html

#include "text/byte_symbols.h"

#include <array>

namespace otter {

namespace {

bool stands_for_itself(unsigned byte) {
  return (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

struct Table {
  std::array<char32_t, 256> symbol{};
  Table() {
    char32_t next = 0x100;
    for (unsigned byte = 0; byte < 256; ++byte) symbol[byte] = stands_for_itself(byte) ? byte : next++;
  }
};

const Table& table() {
  static const Table t;
  return t;
}

}  // namespace

char32_t byte_to_symbol(uint8_t byte) { return table().symbol[byte]; }

std::optional<uint8_t> symbol_to_byte(char32_t symbol) {
  if (symbol < 0x100) {
    if (stands_for_itself(symbol)) return static_cast<uint8_t>(symbol);
    return std::nullopt;
  }
  const auto& symbols = table().symbol;
  for (unsigned byte = 0; byte < 256; ++byte) {
    if (symbols[byte] == symbol) return static_cast<uint8_t>(byte);
  }
  return std::nullopt;
}

}  // namespace otter

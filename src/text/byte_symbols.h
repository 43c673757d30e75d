#pragma once
// GPT-2's bytes_to_unicode table, which CLIP's BPE vocabulary is written in: every byte gets a
// printable code point so that vocab.json and merges.txt never contain spaces or control bytes.
// Bytes '!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves; the other 68 take U+0100, U+0101, ...
// in increasing byte order (so ' ' is 'Ġ').
#include <cstdint>
#include <optional>

namespace otter {

char32_t byte_to_symbol(uint8_t byte);
std::optional<uint8_t> symbol_to_byte(char32_t symbol);  // nullopt for a code point not in the table

}  // namespace otter

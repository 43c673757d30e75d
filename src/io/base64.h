#pragma once
// Base64 (RFC 4648, standard alphabet, padded): images inline in HTML reports and JSON responses.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace otter {

std::string base64_encode(std::span<const uint8_t> bytes);
// std::nullopt for a character outside the alphabet or a bad length/padding. Whitespace is not
// allowed; a "data:...;base64," prefix is not stripped here.
std::optional<std::vector<uint8_t>> base64_decode(std::string_view text);

}  // namespace otter

#include "text/utf8.h"

#include <cstdint>
#include <optional>

#include "core/error.h"

namespace otter::utf8 {

namespace {

// Decodes one code point at bytes[pos]; on success advances pos. nullopt for any ill-formed
// sequence (Unicode's "well-formed UTF-8" table, so overlongs and surrogates are rejected).
std::optional<char32_t> decode_one(std::string_view bytes, size_t& pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) {
    ++pos;
    return b0;
  }
  int length = 0;
  char32_t cp = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2, cp = b0 & 0x1Fu;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3, cp = b0 & 0x0Fu;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4, cp = b0 & 0x07u;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    return std::nullopt;
  }
  if (pos + static_cast<size_t>(length) > bytes.size()) return std::nullopt;
  for (int k = 1; k < length; ++k) {
    const uint8_t b = byte(pos + static_cast<size_t>(k));
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return std::nullopt;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  pos += static_cast<size_t>(length);
  return cp;
}

}  // namespace

std::u32string decode(std::string_view bytes, std::string_view what) {
  std::u32string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const auto cp = decode_one(bytes, pos);
    OTTER_CHECK(cp.has_value(), what, " is not valid UTF-8: bad byte 0x", std::hex,
                static_cast<unsigned>(static_cast<uint8_t>(bytes[pos])), std::dec, " at byte offset ", pos,
                "; pass the text as UTF-8");
    out.push_back(*cp);
  }
  return out;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode(std::u32string_view code_points) {
  std::string out;
  out.reserve(code_points.size());
  for (const char32_t cp : code_points) append(out, cp);
  return out;
}

std::string sanitize(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (const auto cp = decode_one(bytes, pos)) {
      append(out, *cp);
    } else {
      append(out, U'\uFFFD');
      ++pos;
    }
  }
  return out;
}

}  // namespace otter::utf8

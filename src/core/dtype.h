#pragma once
// Element types a tensor can hold. The names match the safetensors spelling.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace otter {

enum class DType : uint8_t { F32, F16, BF16, F64, I32, I64, U8 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
  }
  return "?";
}

constexpr bool dtype_is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

// Parses a safetensors dtype string ("F32", "BF16", ...); nullopt for anything otter cannot hold.
std::optional<DType> dtype_from_name(std::string_view name);

}  // namespace otter

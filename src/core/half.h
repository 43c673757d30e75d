#pragma once
// f32 <-> f16 <-> bf16 conversion. Scalar versions are exact IEEE round-to-nearest-even; the
// bulk versions use F16C / AVX-512 BF16 when the CPU has them (chosen at run time) and produce
// bit-identical results to the scalar ones.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace otter {

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

void f32_to_f16_n(const float* in, uint16_t* out, size_t n);
void f16_to_f32_n(const uint16_t* in, float* out, size_t n);
void f32_to_bf16_n(const float* in, uint16_t* out, size_t n);
void bf16_to_f32_n(const uint16_t* in, float* out, size_t n);

// Converts n elements between any two dtypes (floats via f32 or f64, integers by value).
void convert(const void* in, DType in_type, void* out, DType out_type, size_t n);

}  // namespace otter

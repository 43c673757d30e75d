#include "core/half.h"

#include <algorithm>

// GCC 12 warns about its own AVX-512 intrinsic headers (a known false positive on the
// reduce/extract helpers); the intrinsics are used as documented.
#if defined(__GNUC__) && !defined(__clang__)  // GCC's warning names; clang has no such false positive
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>

#include "core/cpu_features.h"
#include "core/error.h"

namespace otter {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // result is subnormal or zero
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14 + (113 - e) - ... keeps 10 fractional bits
    uint32_t half_m = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_m & 1u))) ++half_m;
    return static_cast<uint16_t>(sign | half_m);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);  // round to nearest even on the 13 dropped bits
  return static_cast<uint16_t>(sign | (r >> 13));
}

namespace {

__attribute__((target("avx2,f16c"))) void f32_to_f16_f16c(const float* in, uint16_t* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; ++i) out[i] = f32_to_f16(in[i]);
}

__attribute__((target("avx2,f16c"))) void f16_to_f32_f16c(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = f16_to_f32(in[i]);
}

__attribute__((target("avx512f,avx512bf16,avx512vl"))) void f32_to_bf16_avx512(const float* in, uint16_t* out,
                                                                                   size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(in + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), reinterpret_cast<const __m256i&>(h));
  }
  for (; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

__attribute__((target("avx512f"))) void bf16_to_f32_avx512(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)));
    _mm512_storeu_si512(out + i, _mm512_slli_epi32(wide, 16));
  }
  for (; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

}  // namespace

void f32_to_f16_n(const float* in, uint16_t* out, size_t n) {
  if (cpu_features().f16c && cpu_features().avx2) return f32_to_f16_f16c(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
}

void f16_to_f32_n(const uint16_t* in, float* out, size_t n) {
  if (cpu_features().f16c && cpu_features().avx2) return f16_to_f32_f16c(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(in[i]);
}

void f32_to_bf16_n(const float* in, uint16_t* out, size_t n) {
  if (cpu_features().avx512_bf16 && cpu_features().avx512vl) return f32_to_bf16_avx512(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

void bf16_to_f32_n(const uint16_t* in, float* out, size_t n) {
  if (cpu_features().avx512f) return bf16_to_f32_avx512(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

namespace {

double load_as_double(const void* in, DType t, size_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(in)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(in)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(in)[i]);
    case DType::F64: return static_cast<const double*>(in)[i];
    case DType::I32: return static_cast<const int32_t*>(in)[i];
    case DType::I64: return static_cast<double>(static_cast<const int64_t*>(in)[i]);
    case DType::U8: return static_cast<const uint8_t*>(in)[i];
  }
  return 0;
}

void store_from_double(void* out, DType t, size_t i, double v) {
  switch (t) {
    case DType::F32: static_cast<float*>(out)[i] = static_cast<float>(v); break;
    case DType::F16: static_cast<uint16_t*>(out)[i] = f32_to_f16(static_cast<float>(v)); break;
    case DType::BF16: static_cast<uint16_t*>(out)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::F64: static_cast<double*>(out)[i] = v; break;
    case DType::I32: static_cast<int32_t*>(out)[i] = static_cast<int32_t>(v); break;
    case DType::I64: static_cast<int64_t*>(out)[i] = static_cast<int64_t>(v); break;
    case DType::U8: static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(v); break;
  }
}

}  // namespace

void convert(const void* in, DType in_type, void* out, DType out_type, size_t n) {
  if (in_type == out_type) {
    std::memcpy(out, in, n * dtype_size(in_type));
    return;
  }
  const auto* f = static_cast<const float*>(in);
  auto* h = static_cast<uint16_t*>(out);
  if (in_type == DType::F32 && out_type == DType::F16) return f32_to_f16_n(f, h, n);
  if (in_type == DType::F32 && out_type == DType::BF16) return f32_to_bf16_n(f, h, n);
  if (in_type == DType::F16 && out_type == DType::F32)
    return f16_to_f32_n(static_cast<const uint16_t*>(in), static_cast<float*>(out), n);
  if (in_type == DType::BF16 && out_type == DType::F32)
    return bf16_to_f32_n(static_cast<const uint16_t*>(in), static_cast<float*>(out), n);
  // Between the two 16-bit formats through f32 in chunks, on the bulk conversions (f16 -> f32 is
  // exact, so the result equals the element-wise path's; the element-wise path took a tenth of the
  // first step packing SD 1.5's f16 weights for the bf16 kernels).
  if ((in_type == DType::F16 && out_type == DType::BF16) || (in_type == DType::BF16 && out_type == DType::F16)) {
    constexpr size_t kChunk = 4096;
    float buf[kChunk];
    const auto* src = static_cast<const uint16_t*>(in);
    for (size_t i = 0; i < n; i += kChunk) {
      const size_t m = std::min(kChunk, n - i);
      if (in_type == DType::F16) {
        f16_to_f32_n(src + i, buf, m);
        f32_to_bf16_n(buf, h + i, m);
      } else {
        bf16_to_f32_n(src + i, buf, m);
        f32_to_f16_n(buf, h + i, m);
      }
    }
    return;
  }
  // I64 through double would lose precision past 2^53.
  if (in_type == DType::I64 && out_type == DType::I32) {
    for (size_t i = 0; i < n; ++i) static_cast<int32_t*>(out)[i] = static_cast<int32_t>(static_cast<const int64_t*>(in)[i]);
    return;
  }
  for (size_t i = 0; i < n; ++i) store_from_double(out, out_type, i, load_as_double(in, in_type, i));
}

}  // namespace otter

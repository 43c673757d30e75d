#pragma once
// Branch-free float math written so GCC vectorises the loops that call it (the kernels that use
// these are compiled for AVX-512, AVX2 and baseline x86-64 and picked at run time). Accuracy is
// a few ulp, well inside the tolerances the op tests state against double references.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace otter::cpu {

inline float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// exp(x) by range reduction x = n·ln2 + r, |r| <= ln2/2, and a degree-6 polynomial for e^r.
inline float fast_exp(float x) {
  // Plain comparisons, not std::fmin/fmax: those are library calls (NaN rules) that stop GCC
  // from vectorising every loop that uses this function.
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.7f ? 88.7f : x;
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = std::fma(n, -0.693145751953125f, x);  // ln2 split in two for an exact product
  r = std::fma(n, -1.428606765330187045e-06f, r);
  float p = 1.0f / 720.0f;
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const int32_t e = static_cast<int32_t>(n) + 127;
  // e is within [1, 254] because of the clamp above, so 2^n is a normal float.
  return p * bits_to_float(static_cast<uint32_t>(e) << 23);
}

inline float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

inline float fast_silu(float x) { return x / (1.0f + fast_exp(-x)); }

// tanh via exp, stable for both signs.
inline float fast_tanh(float x) {
  const float e = fast_exp(-2.0f * std::fabs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return std::copysign(t, x);
}

// erf by Abramowitz–Stegun 7.1.26 is too coarse (1.5e-7 abs is fine, but its relative error near 0
// is poor); use the identity erf(x) = 1 - erfc(x) with a rational erfc approximation of 1.2e-7
// absolute error (Numerical Recipes' erfcc form, coefficients from Chebyshev fitting).
inline float fast_erf(float x) {
  const float z = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = std::fma(p, t, -0.82215223f);
  p = std::fma(p, t, 1.48851587f);
  p = std::fma(p, t, -1.13520398f);
  p = std::fma(p, t, 0.27886807f);
  p = std::fma(p, t, -0.18628806f);
  p = std::fma(p, t, 0.09678418f);
  p = std::fma(p, t, 0.37409196f);
  p = std::fma(p, t, 1.00002368f);
  p = std::fma(p, t, -1.26551223f);
  const float erfc = t * fast_exp(-z * z + p);
  return std::copysign(1.0f - erfc, x);
}

}  // namespace otter::cpu

#include "sampling/torch_cpu_generator.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numbers>

// Bit-exactness depends on every multiply and add below being rounded exactly where written:
// fused only where std::fma says so, never contracted by the compiler on its own. GCC does not
// contract in ISO mode (-std=c++20, which the build uses); clang needs to be told.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace otter {

// ---------------------------------------------------------------------------------------------
// MT19937

void Mt19937::seed_with(uint32_t seed) {
  state_[0] = seed;
  for (uint32_t i = 1; i < state_.size(); ++i) {
    const uint32_t prev = state_[i - 1];
    state_[i] = 1812433253u * (prev ^ (prev >> 30)) + i;
  }
  index_ = state_.size();  // twist before the first output
}

void Mt19937::twist() {
  constexpr size_t n = 624, m = 397;
  constexpr uint32_t matrix_a = 0x9908b0dfu, upper = 0x80000000u, lower = 0x7fffffffu;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t y = (state_[i] & upper) | (state_[(i + 1) % n] & lower);
    state_[i] = state_[(i + m) % n] ^ (y >> 1) ^ ((y & 1u) ? matrix_a : 0u);
  }
  index_ = 0;
}

uint32_t Mt19937::next() {
  if (index_ >= state_.size()) twist();
  uint32_t y = state_[index_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

// ---------------------------------------------------------------------------------------------
// Cephes float32 log / sincos as evaluated by torch's AVX2 normal kernel. The polynomial
// coefficients are those of Cephes' logf/sinf/cosf (Moshier); the fma placement is what the
// compiler produced for torch's kernel (one rounding where the vector code has mul then add).

namespace torch_avx2_math {
namespace {

constexpr float kSqrtHalf = 0.707106781186547524f;
// logf(1 + x) ≈ x - x²/2 + x³·P(x) on [sqrt(1/2) - 1, sqrt(2) - 1].
constexpr float kLogP[] = {7.0376836292E-2f,  -1.1514610310E-1f, 1.1676998740E-1f,
                           -1.2420140846E-1f, 1.4249322787E-1f,  -1.6668057665E-1f,
                           2.0000714765E-1f,  -2.4999993993E-1f, 3.3333331174E-1f};
// ln 2 split in two so that e·ln2 is exact to float precision: q2 has few mantissa bits.
constexpr float kLn2Low = -2.12194440e-4f;
constexpr float kLn2High = 0.693359375f;

// π/4 split in three pieces (Cody–Waite) for an accurate reduction x - j·π/4.
constexpr float kPiOver4Part1 = 0.78515625f;
constexpr float kPiOver4Part2 = 2.4187564849853515625e-4f;
constexpr float kPiOver4Part3 = 3.77489497744594108e-8f;
constexpr float kFourOverPi = 1.27323954473516f;
constexpr float kSinP[] = {-1.9515295891E-4f, 8.3321608736E-3f, -1.6666654611E-1f};
constexpr float kCosP[] = {2.443315711809948E-005f, -1.388731625493765E-003f,
                           4.166664568298827E-002f};

constexpr uint32_t kSignBit = 0x80000000u;
float flip_sign_if(float v, bool flip) {
  return flip ? std::bit_cast<float>(std::bit_cast<uint32_t>(v) ^ kSignBit) : v;
}

}  // namespace

float log(float x) {
  if (!(x > 0.0f)) return std::numeric_limits<float>::quiet_NaN();  // torch: NaN for x <= 0
  x = std::max(x, std::numeric_limits<float>::min());  // denormals are cut off, as in torch

  // x = m · 2^k with m in [0.5, 1): e = k + ... taken from the exponent field.
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 0x7f);
  e = e + 1.0f;
  x = std::bit_cast<float>((bits & ~0x7f800000u) | std::bit_cast<uint32_t>(0.5f));

  // Centre the argument: m < sqrt(1/2) → use 2m - 1 and k - 1, else m - 1.
  const bool small = x < kSqrtHalf;
  const float doubled_part = small ? x : 0.0f;
  x = x - 1.0f;
  e = e - (small ? 1.0f : 0.0f);
  x = x + doubled_part;

  const float z = x * x;
  float y = kLogP[0];
  for (int i = 1; i < 9; ++i) y = std::fma(y, x, kLogP[i]);
  const float yx = y * x;
  const float e_low = e * kLn2Low;
  y = std::fma(yx, z, e_low);
  y = std::fma(-z, 0.5f, y);
  const float x_plus_y = x + y;
  return std::fma(e, kLn2High, x_plus_y);
}

void sincos(float x, float* sin_out, float* cos_out) {
  const bool negative = std::signbit(x);
  x = std::fabs(x);

  // Octant j (made even) of |x|; both polynomials are evaluated on the reduced argument and
  // swapped according to j, as the vector code does.
  int32_t j = static_cast<int32_t>(x * kFourOverPi);  // truncation, like cvttps
  j = (j + 1) & ~1;
  const float y = static_cast<float>(j);
  const bool sin_sign_swap = (j & 4) != 0;
  const bool cos_sign_swap = (~(j - 2) & 4) != 0;
  const bool use_sin_poly_for_sin = (j & 2) == 0;

  x = std::fma(y, -kPiOver4Part1, x);
  x = std::fma(y, -kPiOver4Part2, x);
  x = std::fma(y, -kPiOver4Part3, x);

  const float z = x * x;
  float yc = kCosP[0];
  yc = std::fma(yc, z, kCosP[1]);
  yc = std::fma(yc, z, kCosP[2]);
  const float ycz = yc * z;
  const float half_z = z * 0.5f;
  yc = std::fma(ycz, z, -half_z);
  yc = yc + 1.0f;

  float ys = kSinP[0];
  ys = std::fma(ys, z, kSinP[1]);
  ys = std::fma(ys, z, kSinP[2]);
  const float ysz = ys * z;
  ys = std::fma(ysz, x, x);

  // The vector code blends with masked adds, whose "+ 0" turns a -0 result into +0.
  const float s = use_sin_poly_for_sin ? 0.0f + ys : yc + 0.0f;
  const float c = use_sin_poly_for_sin ? yc + 0.0f : 0.0f + ys;
  *sin_out = flip_sign_if(s, negative != sin_sign_swap);
  *cos_out = flip_sign_if(c, cos_sign_swap);
}

}  // namespace torch_avx2_math

// ---------------------------------------------------------------------------------------------
// TorchCpuGenerator

void TorchCpuGenerator::manual_seed(uint64_t seed) {
  engine_.seed_with(static_cast<uint32_t>(seed & 0xffffffffu));
  cached_normal_.reset();
}

uint64_t TorchCpuGenerator::next64() {
  const uint64_t hi = engine_.next();
  const uint64_t lo = engine_.next();
  return (hi << 32) | lo;
}

void TorchCpuGenerator::randn(float* out, size_t n) {
  // torch switches algorithm on the element count of the call (normal_kernel in
  // aten/src/ATen/native/cpu/DistributionTemplates.h).
  if (n < 16) {
    randn_small(out, n);
  } else {
    randn_large(out, n);
  }
}

void TorchCpuGenerator::randn_small(float* out, size_t n) {
  constexpr double two_to_minus_53 = 0x1p-53;
  constexpr uint64_t mask53 = (uint64_t{1} << 53) - 1;
  for (size_t i = 0; i < n; ++i) {
    double value;
    if (cached_normal_) {
      value = *cached_normal_;
      cached_normal_.reset();
    } else {
      const double u1 = static_cast<double>(next64() & mask53) * two_to_minus_53;
      const double u2 = static_cast<double>(next64() & mask53) * two_to_minus_53;
      const double r = std::sqrt(-2.0 * std::log1p(-u2));
      const double theta = 2.0 * std::numbers::pi * u1;
      cached_normal_ = r * std::sin(theta);
      value = r * std::cos(theta);
    }
    // torch returns value·std + mean with std 1, mean 0; the "+ 0" maps -0 to +0.
    out[i] = static_cast<float>(value + 0.0);
  }
}

namespace {

// Box–Muller on 16 uniforms in place: pairs (d[j], d[j+8]) → (r·cos θ, r·sin θ).
void box_muller_16(float* d) {
  constexpr float two_pi = static_cast<float>(2.0 * std::numbers::pi);
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - d[j];  // in (0, 1]: log never sees 0
    const float u2 = d[j + 8];
    const float radius = std::sqrt(-2.0f * torch_avx2_math::log(u1));
    const float theta = two_pi * u2;
    float sin_theta, cos_theta;
    torch_avx2_math::sincos(theta, &sin_theta, &cos_theta);
    d[j] = radius * cos_theta + 0.0f;  // torch: fma(n, std = 1, mean = 0)
    d[j + 8] = radius * sin_theta + 0.0f;
  }
}

}  // namespace

void TorchCpuGenerator::randn_large(float* out, size_t n) {
  constexpr float two_to_minus_24 = 0x1p-24f;
  constexpr uint32_t mask24 = (1u << 24) - 1;
  auto uniform = [&] { return static_cast<float>(engine_.next() & mask24) * two_to_minus_24; };

  for (size_t i = 0; i < n; ++i) out[i] = uniform();
  for (size_t i = 0; i + 16 <= n; i += 16) box_muller_16(out + i);
  if (n % 16 != 0) {
    // torch redraws the last 16 values (overlapping the last full block) rather than
    // transforming a partial block.
    float* tail = out + n - 16;
    for (size_t i = 0; i < 16; ++i) tail[i] = uniform();
    box_muller_16(tail);
  }
}

}  // namespace otter

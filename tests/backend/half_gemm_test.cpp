// The 16-bit matmul tiles against a double reference: shapes with row, column and chunk tails,
// bias; for f16 the error its f16 partial sums add, for bf16 that the sums are f32 (what is left
// after the operands' rounding is f32 summation error).
#include "backend/cpu/half_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "core/half.h"

namespace otter {
namespace {

Tensor uniform(const Shape& s, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t = Tensor::empty(s, DType::F32);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = d(gen);
  return t;
}

// One case of y = x · Wᵀ + bias (+ residual) through gemm_half in `format`, against two double
// references: the exact products of the operands rounded to the format, summed in double (what is
// left is the kernel's summation error), and the unrounded operands (the whole 16-bit path).
struct GemmErrors {
  double max_y = 0, err_sum = 0, err_all = 0;
};

GemmErrors gemm_errors(cpu::HalfFormat format, int64_t m, int64_t k, int64_t n, bool with_residual) {
  const float bound_w = 1.0f / std::sqrt(static_cast<float>(k));
  const Tensor x = uniform(Shape{m, k}, 1, -2.0f, 2.0f);
  const Tensor w = uniform(Shape{n, k}, 2, -bound_w, bound_w);
  const Tensor bias = uniform(Shape{n}, 3, -0.5f, 0.5f);
  const Tensor residual = uniform(Shape{m, n}, 4, -1.0f, 1.0f);
  Tensor y = Tensor::empty(Shape{m, n}, DType::F32);
  EXPECT_TRUE(cpu::gemm_half(x.f32(), m, cpu::pack_half_weights(w, format), bias.f32(), y.f32(),
                             with_residual ? residual.f32() : nullptr));
  const auto round = [&](float v) {
    return format == cpu::HalfFormat::BF16 ? bf16_to_f32(f32_to_bf16(v)) : f16_to_f32(f32_to_f16(v));
  };
  // F16Weights rounds the weights only: its rows are read as f32.
  const auto round_x = [&](float v) { return cpu::f32_activations(format) ? v : round(v); };
  GemmErrors e;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double rounded = bias.f32()[j] + (with_residual ? double(residual.f32()[i * n + j]) : 0.0), exact = rounded;
      for (int64_t kk = 0; kk < k; ++kk) {
        const float xv = x.f32()[i * k + kk], wv = w.f32()[j * k + kk];
        rounded += double(round_x(xv)) * round(wv);
        exact += double(xv) * wv;
      }
      const double got = y.f32()[i * n + j];
      e.max_y = std::max(e.max_y, std::abs(exact));
      e.err_sum = std::max(e.err_sum, std::abs(got - rounded));
      e.err_all = std::max(e.err_all, std::abs(got - exact));
    }
  std::printf("%s gemm %lldx%lldx%lld: max|y| %.3f, summation error %.2e, total error %.2e (%.3f%% of max|y|)\n",
              cpu::half_format_name(format), static_cast<long long>(m), static_cast<long long>(k),
              static_cast<long long>(n), e.max_y, e.err_sum, e.err_all, e.max_y > 0 ? 100.0 * e.err_all / e.max_y : 0.0);
  return e;
}

// Tails of rows, columns, pairs and k-blocks; no rows at all; and both task orders (gemm_half puts
// row groups outer while the packed weights fit in 4 MB: the last case's 2000x1280 are 5.2 MB).
struct Case { int64_t m, k, n; };
constexpr Case kCases[] = {{1, 1, 1},       {7, 65, 129}, {37, 300, 70}, {64, 320, 320},
                           {13, 1280, 200}, {0, 64, 64},  {20, 1280, 2000}};

// f16 sums products in f16 partial sums: measured at most 0.163% of max|y| (summation and total
// alike); bound about 3x that. The worst case of half_gemm.h's analysis (all terms of one sign) is 1.8%.
TEST(F16Gemm, MatchesDoubleReferenceWithinF16Bound) {
  if (!cpu::half_gemm_available(cpu::HalfFormat::F16)) GTEST_SKIP() << "no AVX-512 FP16 on this CPU";
  for (const Case c : kCases) {
    const GemmErrors e = gemm_errors(cpu::HalfFormat::F16, c.m, c.k, c.n, false);
    EXPECT_LE(e.err_all, 0.005 * e.max_y) << c.m << "x" << c.k << "x" << c.n;
    EXPECT_LE(e.err_sum, 0.005 * e.max_y);
  }
}

// bf16 adds each pair's products into f32 lanes, so against the rounded operands only f32 rounding
// remains (bound 1e-5 of max|y|; measured ≤ 4.4e-7); against the unrounded ones, bf16's operand
// rounding (the bf16 ops' 2e-2; measured ≤ 0.184%). A residual is added as the result is written.
TEST(BF16Gemm, SumsRoundedOperandsInF32) {
  if (!cpu::half_gemm_available(cpu::HalfFormat::BF16)) GTEST_SKIP() << "no AVX-512 BF16 on this CPU";
  for (const Case c : kCases) {
    const GemmErrors e = gemm_errors(cpu::HalfFormat::BF16, c.m, c.k, c.n, true);
    EXPECT_LE(e.err_sum, 1e-5 * e.max_y) << c.m << "x" << c.k << "x" << c.n;
    EXPECT_LE(e.err_all, 2e-2 * e.max_y) << c.m << "x" << c.k << "x" << c.n;
  }
}

// F16Weights widens f16 weights and sums f32 products in f32: against the rounded weights only
// f32 rounding remains (bound 1e-5 of max|y|, as bf16's sums); against the unrounded ones, the f16
// rounding of the weights alone (2^-11 relative each; bound 2e-3 of max|y|, a tenth of bf16's
// operand bound). Odd K reads rows padded in scratch; even K reads x where it is.
TEST(F16WeightsGemm, SumsF32RowsAndF16WeightsInF32) {
  if (!cpu::half_gemm_available(cpu::HalfFormat::F16Weights)) GTEST_SKIP() << "no AVX2, FMA and F16C on this CPU";
  for (const Case c : kCases) {
    for (bool with_residual : {false, true}) {
      const GemmErrors e = gemm_errors(cpu::HalfFormat::F16Weights, c.m, c.k, c.n, with_residual);
      EXPECT_LE(e.err_sum, 1e-5 * e.max_y) << c.m << "x" << c.k << "x" << c.n;
      EXPECT_LE(e.err_all, 2e-3 * e.max_y) << c.m << "x" << c.k << "x" << c.n;
    }
  }
}

}  // namespace
}  // namespace otter

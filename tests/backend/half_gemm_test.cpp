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

TEST(F16Gemm, MatchesDoubleReferenceWithinF16Bound) {
  if (!cpu::half_gemm_available(cpu::HalfFormat::F16)) GTEST_SKIP() << "no AVX-512 FP16 on this CPU";
  struct Case { int64_t m, k, n; };
  for (const Case c : {Case{1, 1, 1}, Case{7, 65, 129}, Case{37, 300, 70}, Case{64, 320, 320}, Case{13, 1280, 200}}) {
    const float bound_w = 1.0f / std::sqrt(static_cast<float>(c.k));
    const Tensor x = uniform(Shape{c.m, c.k}, 1, -2.0f, 2.0f);
    const Tensor w = uniform(Shape{c.n, c.k}, 2, -bound_w, bound_w);
    const Tensor bias = uniform(Shape{c.n}, 3, -0.5f, 0.5f);
    Tensor y = Tensor::empty(Shape{c.m, c.n}, DType::F32);
    cpu::gemm_half(x.f32(), c.m, cpu::pack_half_weights(w, cpu::HalfFormat::F16), bias.f32(), y.f32());
    // Exact products of the f16-rounded operands, summed in double: what is left is the error of
    // the f16 partial sums alone. Against the unrounded operands: the whole f16 path.
    double max_y = 0, err_sum = 0, err_all = 0;
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double rounded = bias.f32()[j], exact = bias.f32()[j];
        for (int64_t k = 0; k < c.k; ++k) {
          const float xv = x.f32()[i * c.k + k], wv = w.f32()[j * c.k + k];
          rounded += double(f16_to_f32(f32_to_f16(xv))) * f16_to_f32(f32_to_f16(wv));
          exact += double(xv) * wv;
        }
        const double got = y.f32()[i * c.n + j];
        max_y = std::max(max_y, std::abs(exact));
        err_sum = std::max(err_sum, std::abs(got - rounded));
        err_all = std::max(err_all, std::abs(got - exact));
      }
    std::printf("f16 gemm %lldx%lldx%lld: max|y| %.3f, f16-sum error %.2e, total error %.2e (%.3f%% of max|y|)\n",
                static_cast<long long>(c.m), static_cast<long long>(c.k), static_cast<long long>(c.n), max_y, err_sum,
                err_all, 100.0 * err_all / max_y);
    // Measured at most 0.163% of max|y| (f16-sum and total alike); bound about 3x that. The
    // worst case of half_gemm.h's analysis (all terms of one sign) is 1.8%.
    EXPECT_LE(err_all, 0.005 * max_y) << c.m << "x" << c.k << "x" << c.n;
    EXPECT_LE(err_sum, 0.005 * max_y);
  }
}

// bf16: products of the bf16-rounded operands summed in f32 lanes, so against the double sum of the
// same rounded products only f32 rounding remains (bound 1e-5 of max|y|); against the unrounded
// operands, bf16's operand rounding (the bf16 ops' 2e-2 of max|y|). A residual is added as written.
TEST(BF16Gemm, SumsRoundedOperandsInF32) {
  if (!cpu::half_gemm_available(cpu::HalfFormat::BF16)) GTEST_SKIP() << "no AVX-512 BF16 on this CPU";
  struct Case { int64_t m, k, n; };
  for (const Case c : {Case{1, 1, 1}, Case{7, 65, 129}, Case{37, 300, 70}, Case{64, 320, 320}, Case{13, 1280, 200}}) {
    const float bound_w = 1.0f / std::sqrt(static_cast<float>(c.k));
    const Tensor x = uniform(Shape{c.m, c.k}, 1, -2.0f, 2.0f);
    const Tensor w = uniform(Shape{c.n, c.k}, 2, -bound_w, bound_w);
    const Tensor bias = uniform(Shape{c.n}, 3, -0.5f, 0.5f);
    const Tensor residual = uniform(Shape{c.m, c.n}, 4, -1.0f, 1.0f);
    Tensor y = Tensor::empty(Shape{c.m, c.n}, DType::F32);
    ASSERT_TRUE(cpu::gemm_half(x.f32(), c.m, cpu::pack_half_weights(w, cpu::HalfFormat::BF16), bias.f32(), y.f32(),
                               residual.f32()));
    double max_y = 0, err_sum = 0, err_all = 0;
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double rounded = bias.f32()[j] + double(residual.f32()[i * c.n + j]), exact = rounded;
        for (int64_t k = 0; k < c.k; ++k) {
          const float xv = x.f32()[i * c.k + k], wv = w.f32()[j * c.k + k];
          rounded += double(bf16_to_f32(f32_to_bf16(xv))) * bf16_to_f32(f32_to_bf16(wv));
          exact += double(xv) * wv;
        }
        const double got = y.f32()[i * c.n + j];
        max_y = std::max(max_y, std::abs(exact));
        err_sum = std::max(err_sum, std::abs(got - rounded));
        err_all = std::max(err_all, std::abs(got - exact));
      }
    std::printf("bf16 gemm %lldx%lldx%lld: max|y| %.3f, f32-sum error %.2e, total error %.2e (%.3f%% of max|y|)\n",
                static_cast<long long>(c.m), static_cast<long long>(c.k), static_cast<long long>(c.n), max_y, err_sum,
                err_all, 100.0 * err_all / max_y);
    EXPECT_LE(err_sum, 1e-5 * max_y) << c.m << "x" << c.k << "x" << c.n;
    EXPECT_LE(err_all, 2e-2 * max_y) << c.m << "x" << c.k << "x" << c.n;
  }
}

}  // namespace
}  // namespace otter

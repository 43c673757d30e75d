// Every backend op against the naive double-precision references in naive_reference.h, on random
// shapes including odd sizes. Tolerances, relative to the largest reference value:
//  - f32: 2e-5 (float rounding of sums of up to a few thousand terms);
//  - bf16 (conv, linear, matmul): compared with the reference evaluated on the bf16-rounded inputs,
//    so what remains is f32 accumulation: the same 2e-5; plus a loose 2e-2 check against the exact
//    f32 reference, which bounds the effect of rounding the operands.
//  - f16 (conv, linear; AVX-512 FP16): against the reference on f16-rounded inputs, what remains
//    is the f16 summation (64 terms per partial sum): 5e-3 (measured ≤ 1.7e-3); against the exact
//    reference 1e-2. Attention's two products (even head sizes) against the exact reference: 5e-3
//    (measured ≤ 1.3e-3). Batched matmuls stay f32 under f16.
// Ops that always compute in f32 (norms, activations, elementwise) are run through every
// backend and must give identical results.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "backend/backend.h"
#include "backend/cpu/attention_avx2.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "naive_reference.h"

namespace otter {
namespace {

using testing::max_abs_error;
using testing::max_abs_of;
using testing::random_tensor;
using testing::round_to_bf16;
using testing::to_double;

constexpr double kF32Tol = 2e-5;
constexpr double kBf16OperandTol = 2e-2;
constexpr double kF16SumTol = 5e-3;
constexpr double kF16OperandTol = 1e-2;

class OpsTest : public ::testing::TestWithParam<Precision> {
 protected:
  void SetUp() override {
    if (GetParam() == Precision::BF16 && !cpu_features().avx512f) GTEST_SKIP() << "no AVX-512 on this CPU";
    // f16: f16 arithmetic on AVX-512 FP16; elsewhere f16 weights with f32 arithmetic (AVX2, FMA,
    // F16C), within the same bounds.
    if (GetParam() == Precision::F16 && !cpu_runs_precision(Precision::F16))
      GTEST_SKIP() << "no AVX-512 FP16, nor AVX2 with FMA and F16C";
    backend_ = make_cpu_backend(GetParam());
  }
  bool bf16() const { return GetParam() == Precision::BF16; }
  bool f16() const { return GetParam() == Precision::F16; }
  // The inputs the backend really multiplies in conv and linear (`f32_op`: an op that stays f32).
  Tensor operand(const Tensor& t, bool f32_op = false) const {
    if (bf16()) return round_to_bf16(t);
    if (f16() && !f32_op) return t.to(DType::F16).to(DType::F32);
    return t;
  }
  void expect_close(const Tensor& got, const std::vector<double>& ref_rounded, const std::vector<double>& ref_exact,
                    const char* what, bool f32_op = false) {
    const double scale = std::max(1.0, max_abs_of(ref_exact));
    const bool in_f16 = f16() && !f32_op;
    EXPECT_LE(max_abs_error(got, ref_rounded), (in_f16 ? kF16SumTol : kF32Tol) * scale) << what;
    if (bf16()) {
      EXPECT_LE(max_abs_error(got, ref_exact), kBf16OperandTol * scale) << what;
    }
    if (in_f16) {
      EXPECT_LE(max_abs_error(got, ref_exact), kF16OperandTol * scale) << what;
    }
  }
  std::unique_ptr<Backend> backend_;
};

struct ConvCase {
  int64_t n, c, h, w, o, k;
  int stride, pt, pb, pl, pr;
};

TEST_P(OpsTest, Conv2dMatchesNaive) {
  const ConvCase cases[] = {
      {2, 5, 9, 7, 6, 3, 1, 1, 1, 1, 1},    // 3x3 same padding, odd sizes
      {1, 16, 8, 8, 8, 1, 1, 0, 0, 0, 0},   // 1x1
      {2, 3, 11, 10, 5, 3, 2, 1, 1, 1, 1},  // 3x3 stride 2 (UNet downsampler)
      {1, 4, 8, 6, 4, 3, 2, 0, 1, 0, 1},    // VAE encoder downsampler: pad bottom/right only
      {1, 32, 16, 16, 32, 3, 1, 1, 1, 1, 1},
      {1, 16, 6, 5, 70, 3, 1, 1, 1, 1, 1},  // a full 64-column panel and one of 6 (f16 weights: one pass of 8)
      {1, 16, 6, 5, 40, 3, 1, 1, 1, 1, 1},  // one panel of 40 columns (bf16: three vectors of 16)
  };
  uint32_t seed = 1;
  for (const ConvCase& cc : cases) {
    const Tensor x = random_tensor(Shape{cc.n, cc.c, cc.h, cc.w}, seed++);
    const Tensor w = random_tensor(Shape{cc.o, cc.c, cc.k, cc.k}, seed++);
    const Tensor b = random_tensor(Shape{cc.o}, seed++);
    Conv2dWeights cw{w, b, cc.stride, cc.pt, cc.pb, cc.pl, cc.pr};
    const Tensor y = backend_->conv2d(x, cw);
    const Tensor y2 = backend_->conv2d(x, cw);  // cached primitive and weights
    const auto ref = testing::naive_conv2d(operand(x), operand(w), &b, cc.stride, cc.pt, cc.pb, cc.pl, cc.pr);
    const auto exact = testing::naive_conv2d(x, w, &b, cc.stride, cc.pt, cc.pb, cc.pl, cc.pr);
    ASSERT_EQ(static_cast<size_t>(y.numel()), ref.size());
    expect_close(y, ref, exact, "conv2d");
    EXPECT_EQ(max_abs_error(y2, to_double(y)), 0.0);
  }
}

// conv2d(x, transform, w): group norm (+ SiLU) and/or nearest 2x upsampling before the
// convolution. Against the naive conv of the naively transformed input, and bit for bit against
// running the ops one after another (fusing must not change a value).
TEST_P(OpsTest, Conv2dWithInputTransformMatchesNaive) {
  struct Case {
    bool norm, silu, upsample;
    int64_t k;
  };
  const Case cases[] = {{true, true, false, 3}, {false, false, true, 3}, {true, false, true, 3}, {true, true, false, 1}};
  uint32_t seed = 40;
  for (const Case& cc : cases) {
    const int64_t n = 2, c = 9, h = 5, w = 7, o = 11, groups = 3;  // odd channels: f16 pads them to even
    const Tensor x = random_tensor(Shape{n, c, h, w}, seed++, -2, 3);
    const Tensor gamma = random_tensor(Shape{c}, seed++), beta = random_tensor(Shape{c}, seed++);
    const NormWeights norm{gamma, beta, 1e-6f};
    const Tensor wt = random_tensor(Shape{o, c, cc.k, cc.k}, seed++), b = random_tensor(Shape{o}, seed++);
    const int pad = static_cast<int>(cc.k / 2);
    Conv2dWeights cw{wt, b, 1, pad, pad, pad, pad};
    ConvInputTransform t;
    if (cc.norm) t = {.group_norm = &norm, .groups = static_cast<int>(groups), .silu = cc.silu};
    t.upsample_nearest2x = cc.upsample;
    const Tensor y = backend_->conv2d(x, t, cw);

    // The transformed input, naively: norm in double, then each pixel repeated 2x2.
    Tensor normed = x.clone();
    if (cc.norm) {
      const auto v = testing::naive_group_norm(x, static_cast<int>(groups), gamma, beta, 1e-6, cc.silu);
      for (size_t i = 0; i < v.size(); ++i) normed.f32()[i] = static_cast<float>(v[i]);
    }
    Tensor input = normed;
    if (cc.upsample) {
      input = Tensor::empty(Shape{n, c, 2 * h, 2 * w}, DType::F32);
      for (int64_t p = 0; p < n * c; ++p)
        for (int64_t yy = 0; yy < 2 * h; ++yy)
          for (int64_t xx = 0; xx < 2 * w; ++xx)
            input.f32()[(p * 2 * h + yy) * 2 * w + xx] = normed.f32()[(p * h + yy / 2) * w + xx / 2];
    }
    // The ops one after another (group_norm is checked against its naive reference above).
    Tensor unfused = x;
    if (cc.norm) unfused = backend_->group_norm(unfused, static_cast<int>(groups), norm, cc.silu);
    if (cc.upsample) unfused = backend_->upsample_nearest2x(unfused);
    // The operands the backend multiplies are its own transform's values rounded to bf16/f16: a
    // float ulp between those and the naive double transform can flip a 16-bit rounding.
    const auto ref = testing::naive_conv2d(operand(unfused), operand(wt), &b, 1, pad, pad, pad, pad);
    const auto exact = testing::naive_conv2d(input, wt, &b, 1, pad, pad, pad, pad);
    ASSERT_EQ(static_cast<size_t>(y.numel()), ref.size());
    expect_close(y, ref, exact, "conv2d with input transform");
    EXPECT_EQ(max_abs_error(y, to_double(backend_->conv2d(unfused, cw))), 0.0)
        << "norm " << cc.norm << " silu " << cc.silu << " upsample " << cc.upsample << " k " << cc.k;
  }
}

// linear and conv2d with a residual: the same values as the op followed by add_inplace (the
// residual is added to the finished sum, in the same order), the residual left untouched, and a
// residual of the wrong shape refused.
TEST_P(OpsTest, ResidualAddedAsTheResultIsWritten) {
  const Tensor x = random_tensor(Shape{2, 7, 19}, 80);
  LinearWeights lw{random_tensor(Shape{37, 19}, 81), random_tensor(Shape{37}, 82)};
  const Tensor res = random_tensor(Shape{2, 7, 37}, 83);
  const auto res_before = to_double(res);
  Tensor unfused = backend_->linear(x, lw);
  backend_->add_inplace(unfused, res);
  EXPECT_EQ(max_abs_error(backend_->linear(x, lw, res), to_double(unfused)), 0.0);
  EXPECT_EQ(max_abs_error(res, res_before), 0.0);
  EXPECT_THROW(backend_->linear(x, lw, random_tensor(Shape{2, 7, 36}, 84)), Error);

  const Tensor xc = random_tensor(Shape{2, 9, 5, 7}, 85, -2, 3);
  const NormWeights norm{random_tensor(Shape{9}, 86), random_tensor(Shape{9}, 87), 1e-6f};
  Conv2dWeights cw{random_tensor(Shape{11, 9, 3, 3}, 88), random_tensor(Shape{11}, 89), 1, 1, 1, 1, 1};
  const ConvInputTransform t{.group_norm = &norm, .groups = 3, .silu = true};
  const Tensor cres = random_tensor(Shape{2, 11, 5, 7}, 90);
  Tensor cunfused = backend_->conv2d(xc, t, cw);
  backend_->add_inplace(cunfused, cres);
  EXPECT_EQ(max_abs_error(backend_->conv2d(xc, t, cw, cres), to_double(cunfused)), 0.0);
  EXPECT_THROW(backend_->conv2d(xc, t, cw, random_tensor(Shape{2, 11, 5, 6}, 91)), Error);
}

TEST_P(OpsTest, LinearMatchesNaive) {
  for (auto [m, k, n] : {std::tuple{7, 33, 5}, {77, 32, 37}, {64, 320, 320}, {1, 17, 1}}) {
    const Tensor x = random_tensor(Shape{1, m, k}, static_cast<uint32_t>(m * 31 + k));
    const Tensor w = random_tensor(Shape{n, k}, static_cast<uint32_t>(n * 17 + k));
    const Tensor b = random_tensor(Shape{n}, 3);
    LinearWeights lw{w, b};
    const Tensor y = backend_->linear(x, lw);
    EXPECT_EQ(y.shape(), (Shape{1, m, n}));
    expect_close(y, testing::naive_linear(operand(x), operand(w), &b), testing::naive_linear(x, w, &b), "linear");
    LinearWeights no_bias{w, Tensor()};
    expect_close(backend_->linear(x, no_bias), testing::naive_linear(operand(x), operand(w), nullptr),
                 testing::naive_linear(x, w, nullptr), "linear without bias");
  }
}

TEST_P(OpsTest, LinearAcceptsHalfStoredWeights) {
  const Tensor x = random_tensor(Shape{5, 24}, 8);
  const Tensor w16 = random_tensor(Shape{12, 24}, 9).to(DType::F16);
  LinearWeights lw{w16, Tensor()};
  const Tensor wf = w16.to(DType::F32);
  expect_close(backend_->linear(x, lw), testing::naive_linear(operand(x), operand(wf), nullptr),
               testing::naive_linear(x, wf, nullptr), "linear f16 weights");
}

// linear_geglu is geglu(linear) to the bit: on the 16-bit path the gate is applied as the products
// are written, from the same sums (bias included) and by the same row function; C = 96 fuses
// (three panels of 32 values and their gates), C = 24 runs the two ops. The fused layer's weights
// also serve a plain linear afterwards (each use packs its own layout), and f16-stored weights
// convert the same way through both.
TEST_P(OpsTest, LinearGegluIsGegluOfLinear) {
  for (const int64_t C : {96, 24})
    for (const bool with_bias : {true, false})
      for (const bool half_weights : {false, true}) {
        const int64_t M = 37, K = 40;
        const Tensor x = random_tensor(Shape{1, M, K}, 90, -2, 2);
        Tensor w = random_tensor(Shape{2 * C, K}, 91);
        if (half_weights) w = w.to(DType::F16);
        const Tensor b = with_bias ? random_tensor(Shape{2 * C}, 92) : Tensor();
        LinearWeights fused{w, b}, apart{w, b};
        const Tensor y = backend_->linear_geglu(x, fused);
        EXPECT_EQ(y.shape(), (Shape{1, M, C}));
        const Tensor projection = backend_->linear(x, apart);
        EXPECT_EQ(max_abs_error(y, to_double(backend_->geglu(projection))), 0.0)
            << "C=" << C << " bias=" << with_bias << " f16 weights=" << half_weights;
        EXPECT_EQ(max_abs_error(backend_->linear(x, fused), to_double(projection)), 0.0) << "the same weights, plain";
      }
}

TEST_P(OpsTest, BatchedMatmulMatchesNaive) {
  const int64_t B = 3, M = 13, K = 21, N = 9;
  const Tensor a = random_tensor(Shape{B, M, K}, 4), b = random_tensor(Shape{B, K, N}, 5);
  const Tensor y = backend_->matmul(a, b);
  auto naive = [&](const Tensor& A, const Tensor& Bm) {
    const auto Ad = to_double(A), Bd = to_double(Bm);
    std::vector<double> r(static_cast<size_t>(B * M * N));
    for (int64_t bb = 0; bb < B; ++bb)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double acc = 0;
          for (int64_t kk = 0; kk < K; ++kk)
            acc += Ad[static_cast<size_t>((bb * M + i) * K + kk)] * Bd[static_cast<size_t>((bb * K + kk) * N + j)];
          r[static_cast<size_t>((bb * M + i) * N + j)] = acc;
        }
    return r;
  };
  expect_close(y, naive(operand(a, true), operand(b, true)), naive(a, b), "matmul", /*f32_op=*/true);
}

TEST_P(OpsTest, AttentionMatchesNaive) {
  struct Case { int64_t b, nq, nk, heads, d; bool causal; };
  for (const Case& c : {Case{2, 77, 77, 4, 8, true}, Case{2, 64, 77, 8, 5, false}, Case{1, 200, 300, 2, 40, false},
                        Case{1, 129, 129, 1, 3, true}, Case{3, 5, 1, 2, 4, false},
                        Case{1, 150, 149, 2, 8, true},  // f16: causal, odd key count (a padded pair)
                        Case{2, 130, 77, 4, 40, false}}) {  // cross-attention: bf16 with 77 keys (odd)
    const Tensor q = random_tensor(Shape{c.b, c.nq, c.heads * c.d}, 10, -2, 2);
    const Tensor k = random_tensor(Shape{c.b, c.nk, c.heads * c.d}, 11, -2, 2);
    const Tensor v = random_tensor(Shape{c.b, c.nk, c.heads * c.d}, 12);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    const Tensor y = backend_->attention(q, k, v, static_cast<int>(c.heads), scale, c.causal);
    const auto ref = testing::naive_attention(q, k, v, static_cast<int>(c.heads), scale, c.causal);
    // f16 (even head sizes): Q·Kᵀ and P·V on f16 operands — q·scale, k, v and the probabilities
    // rounded, D/2 and 64 products per f16 partial sum: the matmul bound (measured ≤ 1.3e-3).
    // bf16 (even head sizes, from 128 keys or 128 queries): the same operands rounded to bf16,
    // sums in f32: the bf16 operand bound (measured ≤ 4.8e-3).
    const bool paired = c.d % 2 == 0, bf16_products = bf16() && paired && (c.nk >= 128 || c.nq >= 128);
    const double tol = f16() && paired ? kF16SumTol : bf16_products ? kBf16OperandTol : kF32Tol;
    const double err = max_abs_error(y, ref) / std::max(1.0, max_abs_of(ref));
    if (bf16_products) std::printf("bf16 attention nq=%lld nk=%lld d=%lld: error %.2e\n", static_cast<long long>(c.nq),
                                   static_cast<long long>(c.nk), static_cast<long long>(c.d), err);
    EXPECT_LE(err, tol) << "attention nq=" << c.nq << " nk=" << c.nk;
  }
}

TEST_P(OpsTest, GroupNormMatchesNaive) {
  for (bool silu : {false, true}) {
    const Tensor x = random_tensor(Shape{2, 12, 7, 5}, 20, -3, 5);
    const Tensor g = random_tensor(Shape{12}, 21), b = random_tensor(Shape{12}, 22);
    const Tensor y = backend_->group_norm(x, 4, NormWeights{g, b, 1e-6f}, silu);
    EXPECT_LE(max_abs_error(y, testing::naive_group_norm(x, 4, g, b, 1e-6, silu)), kF32Tol) << "silu=" << silu;
  }
}

TEST_P(OpsTest, LayerNormMatchesNaive) {
  const int64_t C = 37;
  const Tensor x = random_tensor(Shape{3, 5, C}, 30, -2, 3);
  const Tensor g = random_tensor(Shape{C}, 31), b = random_tensor(Shape{C}, 32);
  const Tensor y = backend_->layer_norm(x, NormWeights{g, b, 1e-5f});
  const auto X = to_double(x);
  std::vector<double> ref(X.size());
  for (int64_t r = 0; r < 15; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += X[static_cast<size_t>(r * C + c)];
    mean /= C;
    for (int64_t c = 0; c < C; ++c) var += std::pow(X[static_cast<size_t>(r * C + c)] - mean, 2);
    var /= C;
    for (int64_t c = 0; c < C; ++c)
      ref[static_cast<size_t>(r * C + c)] =
          (X[static_cast<size_t>(r * C + c)] - mean) / std::sqrt(var + 1e-5) * g.f32()[c] + b.f32()[c];
  }
  EXPECT_LE(max_abs_error(y, ref), kF32Tol);
}

TEST_P(OpsTest, ActivationsMatchClosedForms) {
  const Tensor x = random_tensor(Shape{1001}, 40, -9, 9);
  const auto X = to_double(x);
  auto check = [&](Activation act, auto fn, const char* what) {
    std::vector<double> ref(X.size());
    for (size_t i = 0; i < X.size(); ++i) ref[i] = fn(X[i]);
    EXPECT_LE(max_abs_error(backend_->activation(x, act), ref), 2e-6 * 9) << what;
  };
  check(Activation::SiLU, [](double v) { return v / (1 + std::exp(-v)); }, "silu");
  check(Activation::GeluErf, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }, "gelu erf");
  check(Activation::GeluTanh,
        [](double v) { return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))); },
        "gelu tanh");
  check(Activation::QuickGelu, [](double v) { return v / (1 + std::exp(-1.702 * v)); }, "quick gelu");
}

TEST_P(OpsTest, GegluAndSoftmax) {
  const Tensor x = random_tensor(Shape{3, 7, 2 * 11}, 50, -4, 4);
  const auto X = to_double(x);
  std::vector<double> ref(static_cast<size_t>(3 * 7 * 11));
  for (int64_t r = 0; r < 21; ++r)
    for (int64_t c = 0; c < 11; ++c) {
      const double val = X[static_cast<size_t>(r * 22 + c)], gate = X[static_cast<size_t>(r * 22 + 11 + c)];
      ref[static_cast<size_t>(r * 11 + c)] = val * 0.5 * gate * (1 + std::erf(gate / std::sqrt(2.0)));
    }
  const Tensor g = backend_->geglu(x);
  EXPECT_EQ(g.shape(), (Shape{3, 7, 11}));
  EXPECT_LE(max_abs_error(g, ref), 1e-5);

  const Tensor s = backend_->softmax(x);
  std::vector<double> sref(X.size());
  for (int64_t r = 0; r < 21; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t c = 0; c < 22; ++c) mx = std::max(mx, X[static_cast<size_t>(r * 22 + c)]);
    for (int64_t c = 0; c < 22; ++c) sum += std::exp(X[static_cast<size_t>(r * 22 + c)] - mx);
    for (int64_t c = 0; c < 22; ++c) sref[static_cast<size_t>(r * 22 + c)] = std::exp(X[static_cast<size_t>(r * 22 + c)] - mx) / sum;
  }
  EXPECT_LE(max_abs_error(s, sref), 1e-6);
}

TEST_P(OpsTest, BroadcastingElementwise) {
  const Tensor a = random_tensor(Shape{2, 3, 4, 5}, 60);
  for (const Shape& bs : {Shape{2, 3, 4, 5}, Shape{5}, Shape{2, 3, 1, 1}, Shape{1, 3, 4, 1}, Shape{1}}) {
    const Tensor b = random_tensor(bs, 61);
    const auto A = to_double(a), Bd = to_double(b);
    std::vector<double> sum(A.size()), prod(A.size());
    for (int64_t i = 0; i < a.numel(); ++i) {
      int64_t idx[4] = {i / 60, (i / 20) % 3, (i / 5) % 4, i % 5}, off = 0, stride = 1;
      for (int d = 3; d >= 0; --d) {
        const int bd = d - (4 - bs.rank());
        if (bd < 0) break;
        if (bs[bd] != 1) off += idx[d] * stride;
        stride *= bs[bd];
      }
      sum[static_cast<size_t>(i)] = A[static_cast<size_t>(i)] + Bd[static_cast<size_t>(off)];
      prod[static_cast<size_t>(i)] = A[static_cast<size_t>(i)] * Bd[static_cast<size_t>(off)];
    }
    EXPECT_LE(max_abs_error(backend_->add(a, b), sum), 1e-6) << bs.str();
    EXPECT_LE(max_abs_error(backend_->add(b, a), sum), 1e-6) << "reversed " << bs.str();
    EXPECT_LE(max_abs_error(backend_->mul(a, b), prod), 1e-6) << bs.str();
    Tensor c = a.clone();
    backend_->add_inplace(c, b);
    EXPECT_LE(max_abs_error(c, sum), 1e-6) << bs.str();
  }
  const auto A = to_double(a);
  std::vector<double> scaled(A.size());
  for (size_t i = 0; i < A.size(); ++i) scaled[i] = A[i] * -2.5;
  EXPECT_LE(max_abs_error(backend_->scale(a, -2.5f), scaled), 1e-6);
}

// Sizes that are not multiples of the 16x16 blocks, and one large enough to run threaded.
TEST_P(OpsTest, BatchedTransposeSwapsTheLastTwoDims) {
  for (const Shape& shape : {Shape{2, 19, 37}, Shape{1, 1, 5}, Shape{3, 320, 130}}) {
    const Tensor x = random_tensor(shape, 75);
    const Tensor y = backend_->batched_transpose(x);
    ASSERT_EQ(y.shape(), (Shape{shape[0], shape[2], shape[1]}));
    EXPECT_EQ(max_abs_error(y, to_double(x.permute({0, 2, 1}).contiguous())), 0.0) << shape.str();
  }
}

TEST_P(OpsTest, ConcatChunkUpsample) {
  const Tensor a = random_tensor(Shape{2, 3, 4, 5}, 70), b = random_tensor(Shape{2, 2, 4, 5}, 71);
  const Tensor ab[] = {a, b};
  const Tensor c = backend_->concat(ab, 1);
  ASSERT_EQ(c.shape(), (Shape{2, 5, 4, 5}));
  const auto pieces = backend_->chunk(c.slice(1, 0, 4), 2, 1);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(max_abs_error(pieces[0], to_double(a.slice(1, 0, 2).contiguous())), 0.0);
  EXPECT_EQ(max_abs_error(c.slice(1, 3, 5).contiguous(), to_double(b)), 0.0);
  const Tensor batch[] = {a, a};
  EXPECT_EQ(backend_->concat(batch, 0).shape(), (Shape{4, 3, 4, 5}));

  const Tensor u = backend_->upsample_nearest2x(a);
  ASSERT_EQ(u.shape(), (Shape{2, 3, 8, 10}));
  for (int64_t i = 0; i < u.numel(); ++i) {
    const int64_t w = i % 10, h = (i / 10) % 8, nc = i / 80;
    ASSERT_EQ(u.f32()[i], a.f32()[(nc * 4 + h / 2) * 5 + w / 2]);
  }
}

TEST_P(OpsTest, TimestepEmbeddingMatchesFormula) {
  Tensor t = Tensor::empty(Shape{3}, DType::F32);
  t.f32()[0] = 999.0f;
  t.f32()[1] = 1.0f;
  t.f32()[2] = 973.4567f;
  for (bool flip : {true, false}) {
    const int dim = 16, half = 8;
    const Tensor e = backend_->timestep_embedding(t, dim, flip, 0.0f);
    std::vector<double> ref(static_cast<size_t>(3 * dim));
    for (int b = 0; b < 3; ++b)
      for (int i = 0; i < half; ++i) {
        const double arg = t.f32()[b] * std::exp(-std::log(10000.0) * i / half);
        ref[static_cast<size_t>(b * dim + i)] = flip ? std::cos(arg) : std::sin(arg);
        ref[static_cast<size_t>(b * dim + half + i)] = flip ? std::sin(arg) : std::cos(arg);
      }
    // float32 arguments near 1000 carry ~6e-5 absolute rounding, as in diffusers' float32 maths.
    EXPECT_LE(max_abs_error(e, ref), 2e-4);
  }
}

// Each image's rows come out the same whatever else shares the batch: CFG's batched and split
// passes, continuous batching and images run in turns all rely on it (bit for bit). Every op with
// a batch dimension, run on a batch of three and on each image alone.
TEST_P(OpsTest, RowsDoNotDependOnTheBatch) {
  auto expect_rowwise = [&](const Tensor& batched, auto&& run_alone, const char* what) {
    for (int64_t b = 0; b < batched.dim(0); ++b) {
      const Tensor alone = run_alone(b);
      EXPECT_EQ(max_abs_error(alone, to_double(batched.slice(0, b, b + 1).contiguous())), 0.0)
          << what << ", image " << b << " of " << batched.dim(0);
    }
  };
  for (const auto& [c, o, side, k] : {std::tuple{32, 32, 8, 3}, {64, 32, 16, 3}, {32, 64, 8, 1}, {320, 320, 16, 3},
                                      {640, 320, 16, 1}, {4, 32, 8, 3}, {16, 32, 4, 3}, {32, 32, 2, 3},
                                      {32, 32, 1, 3}, {32, 16, 2, 1}, {1280, 1280, 4, 3},
                                      {640, 640, 8, 3}, {2560, 1280, 8, 3}}) {
    const Tensor x = random_tensor(Shape{3, c, side, side}, 100 + c, -2, 2);
    Conv2dWeights w{random_tensor(Shape{o, c, k, k}, 101), random_tensor(Shape{o}, 102), 1, k / 2, k / 2, k / 2, k / 2};
    const NormWeights norm{random_tensor(Shape{c}, 103), random_tensor(Shape{c}, 104), 1e-5f};
    const ConvInputTransform t{.group_norm = c % 4 == 0 ? &norm : nullptr, .groups = 4, .silu = true};
    const Tensor y = backend_->conv2d(x, w), yt = backend_->conv2d(x, t, w);
    const std::string what = "conv2d " + std::to_string(c) + "->" + std::to_string(o) + " at " +
                             std::to_string(side) + " k" + std::to_string(k);
    expect_rowwise(y, [&](int64_t b) { return backend_->conv2d(x.slice(0, b, b + 1).contiguous(), w); }, what.c_str());
    expect_rowwise(yt, [&](int64_t b) { return backend_->conv2d(x.slice(0, b, b + 1).contiguous(), t, w); },
                   (what + " with norm+silu").c_str());
  }
  for (const auto& [m, k, n] : {std::tuple{64, 32, 32}, {77, 768, 320}, {256, 320, 320}, {64, 320, 2560}, {16, 1280, 1280},
                                      {1, 32, 128}, {1, 320, 1280}, {1, 1280, 1280}, {4, 32, 32}}) {
    const Tensor x = random_tensor(Shape{3, m, k}, static_cast<uint32_t>(200 + m));
    LinearWeights w{random_tensor(Shape{n, k}, 201), random_tensor(Shape{n}, 202)};
    const Tensor y = backend_->linear(x, w);
    const std::string what = "linear " + std::to_string(m) + "x" + std::to_string(k) + "->" + std::to_string(n);
    expect_rowwise(y, [&](int64_t b) { return backend_->linear(x.slice(0, b, b + 1).contiguous(), w); }, what.c_str());
  }
  const Tensor q = random_tensor(Shape{3, 256, 64}, 300, -2, 2), kv = random_tensor(Shape{3, 256, 64}, 301, -2, 2);
  const Tensor a = backend_->attention(q, kv, kv, 2, 0.125f, false);
  expect_rowwise(a, [&](int64_t b) {
    const Tensor qb = q.slice(0, b, b + 1).contiguous(), kb = kv.slice(0, b, b + 1).contiguous();
    return backend_->attention(qb, kb, kb, 2, 0.125f, false);
  }, "attention");
  const Tensor g = random_tensor(Shape{3, 64, 8, 8}, 400);
  const NormWeights gn{random_tensor(Shape{64}, 401), random_tensor(Shape{64}, 402), 1e-5f};
  expect_rowwise(backend_->group_norm(g, 32, gn, true),
                 [&](int64_t b) { return backend_->group_norm(g.slice(0, b, b + 1).contiguous(), 32, gn, true); },
                 "group_norm");
}

INSTANTIATE_TEST_SUITE_P(Precisions, OpsTest, ::testing::Values(Precision::F32, Precision::BF16, Precision::F16),
                         [](const auto& p) { return std::string(precision_name(p.param)); });

// The portable attention path (CPUs without AVX-512) against the same reference.
// The AVX2 kernel (CPUs without AVX-512 run it; called directly so AVX-512 machines test it too):
// head sizes of SD (40, 80, 160) and odd ones, query counts off the 64-query task, key counts off
// the 128-key block and the 6-key tile, causal masking (whole tasks masked in their first block).
TEST(AttentionAvx2, MatchesNaive) {
  if (!cpu_features().avx2 || !cpu_features().fma) GTEST_SKIP() << "no AVX2 and FMA on this CPU";
  struct Case { int64_t b, nq, nk, heads, d; bool causal; };
  for (const Case& c : {Case{2, 77, 77, 4, 8, true}, Case{2, 64, 77, 8, 5, false}, Case{1, 200, 300, 2, 40, false},
                        Case{1, 129, 129, 1, 3, true}, Case{3, 5, 1, 2, 4, false}, Case{1, 150, 149, 2, 8, true},
                        Case{2, 256, 256, 2, 80, false}, Case{1, 64, 77, 1, 160, false}, Case{1, 300, 300, 1, 41, true}}) {
    const Tensor q = random_tensor(Shape{c.b, c.nq, c.heads * c.d}, 20, -2, 2);
    const Tensor k = random_tensor(Shape{c.b, c.nk, c.heads * c.d}, 21, -2, 2);
    const Tensor v = random_tensor(Shape{c.b, c.nk, c.heads * c.d}, 22);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    for (const int threads : {1, 2}) {
      const Tensor y = cpu::attention_avx2(q, k, v, static_cast<int>(c.heads), scale, c.causal, threads);
      const auto ref = testing::naive_attention(q, k, v, static_cast<int>(c.heads), scale, c.causal);
      EXPECT_LE(max_abs_error(y, ref) / std::max(1.0, max_abs_of(ref)), kF32Tol)
          << "nq=" << c.nq << " nk=" << c.nk << " d=" << c.d << " causal=" << c.causal << " threads=" << threads;
    }
  }
}

TEST(AttentionPortable, MatchesNaiveWithoutAvx512) {
  force_portable_kernels(true);
  auto backend = make_cpu_backend(Precision::F32);
  for (bool causal : {false, true}) {
    const Tensor q = random_tensor(Shape{2, 70, 3 * 40}, 13, -2, 2);
    const Tensor k = random_tensor(Shape{2, 150, 3 * 40}, 14, -2, 2);
    const Tensor v = random_tensor(Shape{2, 150, 3 * 40}, 15);
    const float scale = 1.0f / std::sqrt(40.0f);
    const Tensor y = backend->attention(q, k, v, 3, scale, causal);
    EXPECT_LE(max_abs_error(y, testing::naive_attention(q, k, v, 3, scale, causal)), kF32Tol) << causal;
  }
  force_portable_kernels(false);
}

// f16 sums overflow past ±65504: the layer must notice, recompute in f32 and stay there.
TEST(F16Overflow, FallsBackToF32) {
  if (!cpu_features().avx512fp16) GTEST_SKIP() << "no AVX-512 FP16";
  auto backend = make_cpu_backend(Precision::F16);
  Tensor x = Tensor::full(Shape{6, 64}, 3000.0f);
  Tensor w = Tensor::full(Shape{8, 64}, 2.0f);  // each output 64 * 6000 = 384000 > 65504
  LinearWeights lw{w, Tensor()};
  for (int run = 0; run < 2; ++run) {
    const Tensor y = backend->linear(x, lw);
    for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.f32()[i], 384000.0f) << "run " << run << " at " << i;
  }
  // The same with a residual: the recomputed f32 result gets it too.
  LinearWeights lw_res{w, Tensor()};
  const Tensor res = Tensor::full(Shape{6, 8}, 1.0f);
  const Tensor yr = backend->linear(x, lw_res, res);
  for (int64_t i = 0; i < yr.numel(); ++i) ASSERT_EQ(yr.f32()[i], 384001.0f) << i;
  Tensor xc = Tensor::full(Shape{1, 64, 4, 4}, 3000.0f);
  Conv2dWeights cw{Tensor::full(Shape{4, 64, 1, 1}, 2.0f), Tensor(), 1, 0, 0, 0, 0};
  const Tensor yc = backend->conv2d(xc, cw);
  for (int64_t i = 0; i < yc.numel(); ++i) ASSERT_EQ(yc.f32()[i], 384000.0f) << i;
  Conv2dWeights cw_res{Tensor::full(Shape{4, 64, 1, 1}, 2.0f), Tensor(), 1, 0, 0, 0, 0};
  const Tensor ycr = backend->conv2d(xc, ConvInputTransform{}, cw_res, Tensor::full(Shape{1, 4, 4, 4}, 1.0f));
  for (int64_t i = 0; i < ycr.numel(); ++i) ASSERT_EQ(ycr.f32()[i], 384001.0f) << i;
}

// `auto` picks a 16-bit path only where the probe measured it clearly faster than f32 FMAs.
TEST(PrecisionProbe, AutoFollowsTheMeasurement) {
  const PrecisionProbe& p = precision_probe();
  std::printf("probe, one core: f32 FMA %.0f GFLOP/s, bf16 dot %.0f, f16 FMA %.0f -> %s (%s)\n", p.f32_gflops,
              p.bf16_gflops, p.f16_gflops, precision_name(p.preferred), p.reason.c_str());
  EXPECT_EQ(parse_precision("auto"), p.preferred);
  EXPECT_EQ(parse_precision("f32"), Precision::F32);
  EXPECT_EQ(parse_precision("bf16"), Precision::BF16);
  EXPECT_THROW(parse_precision("fp16"), otter::Error);
  EXPECT_EQ(parse_precision("f16"), Precision::F16);
  EXPECT_FALSE(p.reason.empty());
  if (cpu_features().avx512f || (cpu_features().avx2 && cpu_features().fma)) {
    EXPECT_GT(p.f32_gflops, 0.0);
  }
  if (p.preferred == Precision::BF16) {
    EXPECT_GT(p.bf16_gflops, 1.3 * p.f32_gflops);
  }
  if (p.preferred == Precision::F16 && cpu_features().avx512fp16) {
    EXPECT_GT(p.f16_gflops, 1.3 * p.f32_gflops);
    EXPECT_GE(p.f16_gflops, p.bf16_gflops);
  }
  if (!cpu_features().avx512f && cpu_runs_precision(Precision::F16)) {
    EXPECT_EQ(p.preferred, Precision::F16);  // f16 weights, f32 arithmetic: half the memory, same speed
  } else if (!cpu_features().avx512_bf16 && !cpu_features().avx512fp16) {
    EXPECT_EQ(p.preferred, Precision::F32);
  }
}

// Fused attention's extra memory: with N = 4096 queries and keys, a materialised score matrix
// would be 4096·4096·4 B = 64 MiB per head. The kernel may use the output plus O(block·D) scratch
// per thread; the allocator's peak shows which.
TEST(AttentionMemory, NeverMaterialisesScores) {
  auto backend = make_cpu_backend(Precision::F32);
  const int64_t N = 4096, heads = 1, D = 40;
  const Tensor q = random_tensor(Shape{1, N, heads * D}, 1);
  const Tensor k = random_tensor(Shape{1, N, heads * D}, 2);
  const Tensor v = random_tensor(Shape{1, N, heads * D}, 3);
  Allocator& alloc = Allocator::global();
  alloc.reset_peak();
  const size_t before = alloc.stats().live_bytes;
  const Tensor y = backend->attention(q, k, v, static_cast<int>(heads), 1.0f / std::sqrt(40.0f), false);
  const size_t extra = alloc.stats().peak_live_bytes - before;
  const size_t output = static_cast<size_t>(N * heads * D) * sizeof(float);
  const size_t scores = static_cast<size_t>(N * N) * sizeof(float);
  EXPECT_LT(extra, 2 * output + (1u << 20)) << "extra " << extra << " B";
  EXPECT_LT(extra, scores / 16);
  // Spot-check a few rows against the naive formula.
  const Tensor q_rows = q.slice(1, 0, 3).contiguous();
  const auto ref = testing::naive_attention(q_rows, k, v, 1, 1.0 / std::sqrt(40.0), false);
  EXPECT_LE(max_abs_error(y.slice(1, 0, 3).contiguous(), ref), kF32Tol);
}

}  // namespace
}  // namespace otter

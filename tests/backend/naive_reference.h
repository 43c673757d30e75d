#pragma once
// Plain, obviously-correct reference implementations of the backend ops, accumulating in double.
// The fast kernels are tested against these; nothing here is optimised on purpose.
#include <cmath>
#include <random>
#include <vector>

#include "core/half.h"
#include "core/tensor.h"

namespace otter::testing {

inline Tensor random_tensor(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t = Tensor::empty(shape, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(gen);
  return t;
}

// The values a bf16 computation actually multiplies: each input rounded to bfloat16.
inline Tensor round_to_bf16(const Tensor& t) { return t.to(DType::BF16).to(DType::F32); }

inline std::vector<double> to_double(const Tensor& t) {
  const Tensor f = t.to(DType::F32).contiguous();
  return std::vector<double>(f.f32(), f.f32() + f.numel());
}

inline double max_abs_of(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

inline double max_abs_error(const Tensor& got, const std::vector<double>& ref) {
  const Tensor g = got.contiguous();
  double m = 0;
  for (int64_t i = 0; i < g.numel(); ++i) m = std::max(m, std::fabs(static_cast<double>(g.f32()[i]) - ref[static_cast<size_t>(i)]));
  return m;
}

inline std::vector<double> naive_conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pt, int pb,
                                        int pl, int pr) {
  const auto X = to_double(x), Wt = to_double(w);
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t O = w.dim(0), KH = w.dim(2), KW = w.dim(3);
  const int64_t OH = (H + pt + pb - KH) / stride + 1, OW = (W + pl + pr - KW) / stride + 1;
  std::vector<double> y(static_cast<size_t>(N * O * OH * OW));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = bias ? static_cast<double>(bias->f32()[o]) : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t ih = oh * stride - pt + kh, iw = ow * stride - pl + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += X[static_cast<size_t>(((n * C + c) * H + ih) * W + iw)] *
                       Wt[static_cast<size_t>(((o * C + c) * KH + kh) * KW + kw)];
              }
          y[static_cast<size_t>(((n * O + o) * OH + oh) * OW + ow)] = acc;
        }
  return y;
}

// x[M, K] @ w[N, K]^T + b
inline std::vector<double> naive_linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  const auto X = to_double(x), Wt = to_double(w);
  const int64_t K = w.dim(1), N = w.dim(0), M = x.numel() / K;
  std::vector<double> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = bias ? static_cast<double>(bias->f32()[n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += X[static_cast<size_t>(m * K + k)] * Wt[static_cast<size_t>(n * K + k)];
      y[static_cast<size_t>(m * N + n)] = acc;
    }
  return y;
}

inline std::vector<double> naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, double scale,
                                           bool causal) {
  const auto Q = to_double(q), K = to_double(k), V = to_double(v);
  const int64_t B = q.dim(0), Nq = q.dim(1), Nk = k.dim(1), HD = q.dim(2), D = HD / heads;
  std::vector<double> y(static_cast<size_t>(B * Nq * HD));
  std::vector<double> s(static_cast<size_t>(Nk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < Nq; ++i) {
        double mx = -1e300;
        for (int64_t j = 0; j < Nk; ++j) {
          double acc = 0;
          for (int64_t d = 0; d < D; ++d)
            acc += Q[static_cast<size_t>((b * Nq + i) * HD + h * D + d)] * K[static_cast<size_t>((b * Nk + j) * HD + h * D + d)];
          s[static_cast<size_t>(j)] = (causal && j > i) ? -1e300 : acc * scale;
          mx = std::max(mx, s[static_cast<size_t>(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j < Nk; ++j) sum += (s[static_cast<size_t>(j)] = std::exp(s[static_cast<size_t>(j)] - mx));
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < Nk; ++j) acc += s[static_cast<size_t>(j)] * V[static_cast<size_t>((b * Nk + j) * HD + h * D + d)];
          y[static_cast<size_t>((b * Nq + i) * HD + h * D + d)] = acc / sum;
        }
      }
  return y;
}

inline std::vector<double> naive_group_norm(const Tensor& x, int groups, const Tensor& g, const Tensor& bta, double eps,
                                            bool silu) {
  const auto X = to_double(x);
  const int64_t N = x.dim(0), C = x.dim(1), S = x.numel() / (N * C), per = C / groups;
  std::vector<double> y(X.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t gi = 0; gi < groups; ++gi) {
      const size_t base = static_cast<size_t>((n * C + gi * per) * S);
      const size_t cnt = static_cast<size_t>(per * S);
      double mean = 0, var = 0;
      for (size_t i = 0; i < cnt; ++i) mean += X[base + i];
      mean /= static_cast<double>(cnt);
      for (size_t i = 0; i < cnt; ++i) var += (X[base + i] - mean) * (X[base + i] - mean);
      var /= static_cast<double>(cnt);
      for (size_t i = 0; i < cnt; ++i) {
        const int64_t c = gi * per + static_cast<int64_t>(i) / S;
        double v = (X[base + i] - mean) / std::sqrt(var + eps) * g.f32()[c] + bta.f32()[c];
        if (silu) v = v / (1 + std::exp(-v));
        y[base + i] = v;
      }
    }
  return y;
}

}  // namespace otter::testing

// Group norm and layer norm. Statistics are accumulated in double: the inputs of SD's norms
// reach magnitudes where float sums of 10^5 terms lose digits diffusers (which uses a two-pass
// float algorithm with pairwise sums) keeps.
#include <cmath>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vector_math.h"
#include "core/error.h"

namespace otter::cpu {
namespace {

struct Moments {
  float mean;
  float inv_std;
};

// Sums in eight independent double lanes: the fixed lane order lets the compiler vectorise a
// reduction it must otherwise keep sequential (no reassociation without -ffast-math).
OTTER_KERNEL Moments moments(const float* x, int64_t n, float eps) {
  double lane[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) lane[k] += x[i + k];
  double sum = 0;
  for (; i < n; ++i) sum += x[i];
  for (double v : lane) sum += v;
  const double mean = sum / static_cast<double>(n);
  double sq_lane[8] = {};
  for (i = 0; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) {
      const double d = x[i + k] - mean;
      sq_lane[k] += d * d;
    }
  double sq = 0;
  for (; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  for (double v : sq_lane) sq += v;
  const double var = sq / static_cast<double>(n);  // biased, as torch's norms
  return {static_cast<float>(mean), static_cast<float>(1.0 / std::sqrt(var + eps))};
}

// (x - mean) * inv_std * gamma + beta as one multiply-add: the scale and shift of one channel. The
// shift is an explicit fma: written as beta - mean * scale, the compiler fused it inside the
// AVX-512 kernel clones and not in group_norm_affine (built for the baseline ISA), so the fused
// convolutions' input differed from group_norm's by an ulp, enough to flip a bf16 rounding.
inline float norm_scale(Moments m, float gamma) { return m.inv_std * gamma; }
inline float norm_shift(Moments m, float gamma, float beta) { return std::fma(-m.mean, norm_scale(m, gamma), beta); }

// y = (x - mean) * inv_std * gamma + beta over one channel's `n` values, optionally then SiLU.
OTTER_KERNEL void normalise(const float* x, float* y, int64_t n, Moments m, float gamma, float beta, bool silu) {
  const float a = norm_scale(m, gamma);
  const float b = norm_shift(m, gamma, beta);
  if (silu) {
    for (int64_t i = 0; i < n; ++i) y[i] = fast_silu(std::fma(x[i], a, b));
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = std::fma(x[i], a, b);
  }
}

OTTER_KERNEL void normalise_row(const float* x, float* y, int64_t n, Moments m, const float* gamma, const float* beta) {
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m.mean) * m.inv_std * gamma[i] + beta[i];
}

void check_group_norm(const Tensor& x, int groups, const NormWeights& w) {
  OTTER_CHECK(x.rank() >= 2, "group_norm needs [N, C, ...], got ", x.describe());
  const int64_t C = x.dim(1);
  OTTER_CHECK(groups > 0 && C % groups == 0, "group_norm: ", C, " channels do not split into ", groups, " groups");
  OTTER_CHECK(w.gamma.numel() == C && w.beta.numel() == C, "group_norm: gamma/beta must have ", C, " values, got ",
              w.gamma.describe(), " / ", w.beta.describe());
}

}  // namespace

Tensor group_norm_affine(const Tensor& x, int groups, const NormWeights& w) {
  check_group_norm(x, groups, w);
  const int64_t N = x.dim(0), C = x.dim(1), spatial = x.numel() / (N * C), per_group = C / groups;
  const Tensor xc = x.to(DType::F32).contiguous();
  const Tensor gamma = w.gamma.to(DType::F32), beta = w.beta.to(DType::F32);
  Tensor affine = Tensor::empty(Shape{2, N, C}, DType::F32);
  float* scale = affine.f32();
  float* shift = scale + N * C;
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t grp = 0; grp < groups; ++grp) {
      const Moments m = moments(xc.f32() + (n * C + grp * per_group) * spatial, per_group * spatial, w.eps);
      for (int64_t ch = grp * per_group; ch < (grp + 1) * per_group; ++ch) {
        scale[n * C + ch] = norm_scale(m, gamma.f32()[ch]);
        shift[n * C + ch] = norm_shift(m, gamma.f32()[ch], beta.f32()[ch]);
      }
    }
  return affine;
}

Tensor apply_conv_input_transform(const Tensor& x, const ConvInputTransform& t) {
  Tensor y = x;
  if (t.group_norm) y = group_norm(y, t.groups, *t.group_norm, t.silu);
  if (t.upsample_nearest2x) y = upsample_nearest2x(y);
  return y;
}

Tensor group_norm(const Tensor& x, int groups, const NormWeights& w, bool then_silu) {
  check_group_norm(x, groups, w);
  const int64_t N = x.dim(0), C = x.dim(1);
  const Tensor xc = x.contiguous();
  const Tensor gamma = w.gamma.to(DType::F32), beta = w.beta.to(DType::F32);
  Tensor y = Tensor::empty(x.shape(), DType::F32);
  const int64_t spatial = x.numel() / (N * C);
  const int64_t per_group = C / groups;
  const float* in = xc.f32();
  float* out = y.f32();
  const float* g = gamma.f32();
  const float* b = beta.f32();
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      const int64_t base = (n * C + grp * per_group) * spatial;
      const Moments m = moments(in + base, per_group * spatial, w.eps);
      for (int64_t c = 0; c < per_group; ++c) {
        const int64_t ch = grp * per_group + c;
        normalise(in + base + c * spatial, out + base + c * spatial, spatial, m, g[ch], b[ch], then_silu);
      }
    }
  }
  return y;
}

Tensor layer_norm(const Tensor& x, const NormWeights& w) {
  const int64_t C = x.dim(-1);
  OTTER_CHECK(w.gamma.numel() == C && w.beta.numel() == C, "layer_norm: gamma/beta must have ", C,
              " values, got ", w.gamma.describe(), " / ", w.beta.describe());
  const Tensor xc = x.contiguous();
  const Tensor gamma = w.gamma.to(DType::F32), beta = w.beta.to(DType::F32);
  Tensor y = Tensor::empty(x.shape(), DType::F32);
  const int64_t rows = x.numel() / C;
  const float* in = xc.f32();
  float* out = y.f32();
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelMinElements)
  for (int64_t r = 0; r < rows; ++r) {
    const Moments m = moments(in + r * C, C, w.eps);
    normalise_row(in + r * C, out + r * C, C, m, gamma.f32(), beta.f32());
  }
  return y;
}

}  // namespace otter::cpu

// Pointwise activations, GEGLU and softmax.
#include <cmath>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vector_math.h"
#include "core/error.h"

namespace otter::cpu {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kSqrt2OverPi = 0.79788456080286536f;

OTTER_KERNEL void silu(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + fast_exp(-x[i]));
}
OTTER_KERNEL void gelu_erf(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + fast_erf(x[i] * kInvSqrt2));
}
OTTER_KERNEL void gelu_tanh(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.0f + fast_tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}
// CLIP's quick_gelu: x * sigmoid(1.702 x).
OTTER_KERNEL void quick_gelu(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + fast_exp(-1.702f * x[i]));
}
OTTER_KERNEL void softmax_row(const float* x, float* y, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  for (int64_t i = 0; i < n; ++i) y[i] = fast_exp(x[i] - mx);  // apart from the sum, so it vectorises
  float lane[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) lane[k] += y[i + k];
  float sum = 0;
  for (; i < n; ++i) sum += y[i];
  for (float v : lane) sum += v;
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

// Splits n elements into per-thread ranges of whole cache lines.
template <class Fn>
void parallel_range(int64_t n, Fn&& fn) {
  constexpr int64_t kGrain = 16384;
  const int64_t blocks = (n + kGrain - 1) / kGrain;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kGrain;
    fn(begin, std::min(n, begin + kGrain) - begin);
  }
}

}  // namespace

OTTER_KERNEL void geglu_row(const float* value, const float* gate, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = value[i] * 0.5f * gate[i] * (1.0f + fast_erf(gate[i] * kInvSqrt2));
}

Tensor activation(const Tensor& x, Activation act) {
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), DType::F32);
  const float* in = xc.f32();
  float* out = y.f32();
  parallel_range(x.numel(), [&](int64_t off, int64_t n) {
    switch (act) {
      case Activation::SiLU: silu(in + off, out + off, n); break;
      case Activation::GeluErf: gelu_erf(in + off, out + off, n); break;
      case Activation::GeluTanh: gelu_tanh(in + off, out + off, n); break;
      case Activation::QuickGelu: quick_gelu(in + off, out + off, n); break;
    }
  });
  return y;
}

Tensor geglu(const Tensor& x) {
  const int64_t two_c = x.dim(-1);
  OTTER_CHECK(two_c % 2 == 0, "geglu needs an even last dimension, got ", x.describe());
  const int64_t c = two_c / 2;
  std::vector<int64_t> shape = x.shape().to_vector();
  shape.back() = c;
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(Shape(shape), DType::F32);
  const int64_t rows = x.numel() / two_c;
  const float* in = xc.f32();
  float* out = y.f32();
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelMinElements)
  for (int64_t r = 0; r < rows; ++r) geglu_row(in + r * two_c, in + r * two_c + c, out + r * c, c);
  return y;
}

Tensor softmax(const Tensor& x) {
  const int64_t n = x.dim(-1);
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), DType::F32);
  const int64_t rows = n ? x.numel() / n : 0;
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelMinElements)
  for (int64_t r = 0; r < rows; ++r) softmax_row(xc.f32() + r * n, y.f32() + r * n, n);
  return y;
}

}  // namespace otter::cpu

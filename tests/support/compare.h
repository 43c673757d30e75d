#pragma once
// Comparing tensors with references in tests. Values are compared in double precision so the
// comparison itself adds no rounding; any dtype and any strides are accepted.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "core/error.h"
#include "core/tensor.h"

namespace otter::testing {

// Largest |a - b| over all elements; shapes must match. NaN anywhere gives +infinity so a
// broken kernel can never pass a tolerance check.
// Standard-normal values from std::mt19937(seed): test inputs that look like noise predictions.
inline Tensor random_normal_tensor(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  Tensor t = Tensor::empty(shape, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(gen);
  return t;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  OTTER_CHECK(a.shape() == b.shape(), "max_abs_diff: shape mismatch ", a.describe(), " vs ", b.describe());
  const Tensor x = a.to(DType::F64), y = b.to(DType::F64);
  const double* px = x.data<double>();
  const double* py = y.data<double>();
  double m = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double d = std::abs(px[i] - py[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    m = std::max(m, d);
  }
  return m;
}

// How an 8-bit image differs from a reference of the same size: the largest difference in levels
// and how many of the values differ.
struct ByteDiff {
  int max = 0;
  int64_t off = 0, total = 0;
};
inline ByteDiff byte_diff(const uint8_t* got, const Tensor& want_in) {
  const Tensor want = want_in.contiguous();
  ByteDiff d;
  d.total = want.numel();
  for (int64_t i = 0; i < want.numel(); ++i) {
    const int diff = std::abs(int(got[i]) - int(want.data<uint8_t>()[i]));
    d.max = std::max(d.max, diff);
    d.off += diff != 0;
  }
  return d;
}

// Largest |a| over all elements (0 for an empty tensor); NaN gives +infinity.
inline double max_abs(const Tensor& a) {
  const Tensor x = a.to(DType::F64);
  const double* p = x.data<double>();
  double m = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (std::isnan(p[i])) return std::numeric_limits<double>::infinity();
    m = std::max(m, std::abs(p[i]));
  }
  return m;
}

}  // namespace otter::testing

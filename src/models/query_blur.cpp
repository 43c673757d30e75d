#include "models/query_blur.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace otter {
namespace {

// torch.linspace(-half, half, k) in float32: the first half counts up from the start, the second
// half down from the end, as torch's CPU kernel does.
std::vector<float> linspace(float start, float end, int64_t k) {
  std::vector<float> x(static_cast<size_t>(k));
  if (k == 1) {
    x[0] = start;
    return x;
  }
  const float step = (end - start) / static_cast<float>(k - 1);
  for (int64_t i = 0; i < k; ++i)
    x[static_cast<size_t>(i)] = i < k / 2 ? start + step * static_cast<float>(i)
                                          : end - step * static_cast<float>(k - 1 - i);
  return x;
}

// PyTorch's "reflect" padding index: mirror without repeating the edge.
int64_t reflect(int64_t i, int64_t n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

}  // namespace

void blur_query_rows(Tensor& q, int64_t row_begin, int64_t row_end, double sigma, double threshold_inf) {
  OTTER_CHECK(q.rank() == 3 && q.is_contiguous() && q.dtype() == DType::F32, "SEG: queries must be contiguous F32 [B, N, C], got ",
              q.describe());
  const int64_t N = q.dim(1), C = q.dim(2);
  const auto side = static_cast<int64_t>(std::sqrt(static_cast<double>(N)));
  const int64_t square = side * side;
  std::vector<float> grid(static_cast<size_t>(square)), out(static_cast<size_t>(square)),
      tmp(static_cast<size_t>(square));
  const bool gaussian = sigma > threshold_inf;
  std::vector<float> k1;
  int64_t k = 1;
  if (gaussian) {
    const auto six = static_cast<int64_t>(std::ceil(6.0 * sigma));
    k = std::min<int64_t>(six + 1 - six % 2, side - (side % 2 - 1));
    const float half = static_cast<float>(k - 1) / 2.0f;
    k1 = linspace(-half, half, k);
    float sum = 0;
    for (float& v : k1) {
      const float z = v / static_cast<float>(sigma);
      v = std::exp(-0.5f * (z * z));
      sum += v;
    }
    for (float& v : k1) v /= sum;
  }
  const int64_t pad = k / 2;
  for (int64_t b = row_begin; b < row_end; ++b) {
    float* rows = q.f32() + b * N * C;
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t t = 0; t < square; ++t) grid[static_cast<size_t>(t)] = rows[t * C + c];
      if (gaussian) {
        // The 2-D kernel is the outer product of k1 with itself: filter rows, then columns.
        for (int64_t y = 0; y < side; ++y)
          for (int64_t x = 0; x < side; ++x) {
            float acc = 0;
            for (int64_t j = 0; j < k; ++j)
              acc += k1[static_cast<size_t>(j)] * grid[static_cast<size_t>(y * side + reflect(x + j - pad, side))];
            tmp[static_cast<size_t>(y * side + x)] = acc;
          }
        for (int64_t y = 0; y < side; ++y)
          for (int64_t x = 0; x < side; ++x) {
            float acc = 0;
            for (int64_t i = 0; i < k; ++i)
              acc += k1[static_cast<size_t>(i)] * tmp[static_cast<size_t>(reflect(y + i - pad, side) * side + x)];
            out[static_cast<size_t>(y * side + x)] = acc;
          }
      } else {
        double sum = 0;
        for (float v : grid) sum += v;
        std::fill(out.begin(), out.end(), static_cast<float>(sum / static_cast<double>(square)));
      }
      for (int64_t t = 0; t < square; ++t) rows[t * C + c] = out[static_cast<size_t>(t)];
    }
  }
}

}  // namespace otter

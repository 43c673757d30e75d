#include "guidance/laplacian_pyramid.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace otter {
namespace {

bool power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// PyTorch's reflect padding index: mirror without repeating the edge.
int64_t reflect(int64_t i, int64_t n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

// kornia's pyramid kernel, blur5: outer([1, 4, 6, 4, 1]) / 256 on every plane, reflect-padded.
Tensor blur5(const Tensor& x) {
  static const float taps[5] = {1, 4, 6, 4, 1};
  const int64_t planes = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor out = Tensor::empty(x.shape(), DType::F32);
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = x.f32() + p * H * W;
    float* o = out.f32() + p * H * W;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t xx = 0; xx < W; ++xx) {
        float acc = 0;
        for (int i = 0; i < 5; ++i)
          for (int j = 0; j < 5; ++j)
            acc += taps[i] * taps[j] / 256.0f * in[reflect(y + i - 2, H) * W + reflect(xx + j - 2, W)];
        o[y * W + xx] = acc;
      }
  }
  return out;
}

// torch's bilinear interpolation, align_corners False: source = (dst + 0.5)·in/out − 0.5, at least 0.
Tensor bilinear(const Tensor& x, int64_t out_h, int64_t out_w) {
  const int64_t planes = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor out = Tensor::empty(Shape{x.dim(0), x.dim(1), out_h, out_w}, DType::F32);
  const auto axis = [](int64_t o, int64_t in, int64_t out_n, int64_t& i0, int64_t& i1, float& l1) {
    const float scale = static_cast<float>(in) / static_cast<float>(out_n);
    const float src = std::max((static_cast<float>(o) + 0.5f) * scale - 0.5f, 0.0f);
    i0 = std::min(static_cast<int64_t>(src), in - 1);
    i1 = std::min(i0 + 1, in - 1);
    l1 = src - static_cast<float>(i0);
  };
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = x.f32() + p * H * W;
    float* o = out.f32() + p * out_h * out_w;
    for (int64_t y = 0; y < out_h; ++y) {
      int64_t y0, y1;
      float ly;
      axis(y, H, out_h, y0, y1, ly);
      for (int64_t xx = 0; xx < out_w; ++xx) {
        int64_t x0, x1;
        float lx;
        axis(xx, W, out_w, x0, x1, lx);
        const float top = (1 - lx) * in[y0 * W + x0] + lx * in[y0 * W + x1];
        const float bottom = (1 - lx) * in[y1 * W + x0] + lx * in[y1 * W + x1];
        o[y * out_w + xx] = (1 - ly) * top + ly * bottom;
      }
    }
  }
  return out;
}

Tensor subtract(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), DType::F32);
  for (int64_t i = 0; i < a.numel(); ++i) out.f32()[i] = a.f32()[i] - b.f32()[i];
  return out;
}

}  // namespace

Tensor pyramid_up(const Tensor& x) { return blur5(bilinear(x, 2 * x.dim(2), 2 * x.dim(3))); }

void check_pyramid_size(int64_t H, int64_t W, int levels) {
  const int64_t step = int64_t{1} << (levels - 1);
  OTTER_CHECK(levels >= 1 && H % step == 0 && W % step == 0 && (power_of_two(H) || power_of_two(W)),
              "frequency-decoupled guidance with ", levels, " levels needs latents whose sides are multiples of ", step,
              " and one of them a power of two (diffusers' FDG fails otherwise); these are ", H, "x", W,
              " (the image is 8x that): try a size such as 512x512 or 512x768, or fewer levels");
}

std::vector<Tensor> laplacian_pyramid(const Tensor& x_in, int levels) {
  const Tensor x = x_in.contiguous();
  OTTER_CHECK(x.rank() == 4 && x.dtype() == DType::F32, "Laplacian pyramid of ", x.describe(), ": expected F32 [B, C, H, W]");
  check_pyramid_size(x.dim(2), x.dim(3), levels);
  std::vector<Tensor> gaussian{x};
  for (int k = 1; k < levels; ++k) {
    const Tensor& g = gaussian.back();
    gaussian.push_back(bilinear(blur5(g), g.dim(2) / 2, g.dim(3) / 2));
  }
  std::vector<Tensor> out;
  for (int k = 0; k + 1 < levels; ++k) out.push_back(subtract(gaussian[static_cast<size_t>(k)], pyramid_up(gaussian[static_cast<size_t>(k) + 1])));
  out.push_back(gaussian.back());
  return out;
}

Tensor image_from_pyramid(const std::vector<Tensor>& pyramid) {
  Tensor y = pyramid.back().contiguous();
  for (int k = static_cast<int>(pyramid.size()) - 2; k >= 0; --k) {
    Tensor up = pyramid_up(y);
    const Tensor p = pyramid[static_cast<size_t>(k)].contiguous();
    for (int64_t i = 0; i < up.numel(); ++i) up.f32()[i] += p.f32()[i];
    y = up;
  }
  return y;
}

}  // namespace otter

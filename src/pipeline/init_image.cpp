#include "pipeline/init_image.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace otter {

int img2img_first_step(int steps, double strength) {
  OTTER_CHECK(std::isfinite(strength) && strength > 0.0 && strength <= 1.0, "--strength must be in (0, 1], got ",
              strength, ": 1 repaints the whole picture, small values keep more of it");
  // Python's int(num_inference_steps * strength): a double product, truncated.
  const int init_steps = std::min(static_cast<int>(static_cast<double>(steps) * strength), steps);
  OTTER_CHECK(init_steps > 0, "--strength ", strength, " with --steps ", steps,
              " runs no denoising step (steps x strength < 1); raise --strength to at least ",
              1.0 / static_cast<double>(steps), " or --steps to at least ", static_cast<int>(std::ceil(1.0 / strength)));
  return steps - init_steps;
}

Tensor picture_to_vae_input(const PngImage& picture) {
  OTTER_CHECK(picture.channels == 3 || picture.channels == 4, "a picture with ", picture.channels,
              " channels; expected RGB or RGBA");
  const int64_t H = picture.height, W = picture.width, C = picture.channels;
  Tensor out = Tensor::empty(Shape{1, 3, H, W}, DType::F32);
  float* px = out.f32();
  for (int64_t i = 0; i < H * W; ++i) {
    const uint8_t* p = &picture.pixels[static_cast<size_t>(i * C)];
    for (int64_t c = 0; c < 3; ++c) {
      uint8_t v = p[c];
      if (C == 4) {  // over white, rounded to 8 bits as a flattened picture would be
        const int a = p[3];
        v = static_cast<uint8_t>((v * a + 255 * (255 - a) + 127) / 255);
      }
      // diffusers: np.array(img).astype(np.float32) / 255.0, then 2.0 * x - 1.0.
      const float unit = static_cast<float>(v) / 255.0f;
      px[c * H * W + i] = 2.0f * unit - 1.0f;
    }
  }
  return out;
}

Tensor mask_from_picture(const PngImage& picture, bool invert) {
  OTTER_CHECK(picture.channels == 3 || picture.channels == 4, "a mask with ", picture.channels,
              " channels; expected RGB or RGBA");
  const int64_t n = static_cast<int64_t>(picture.width) * picture.height;
  Tensor mask = Tensor::empty(Shape{1, 1, picture.height, picture.width}, DType::F32);
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = &picture.pixels[static_cast<size_t>(i * picture.channels)];
    // PIL's ImagingConvert RGB -> L: (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
    const uint32_t grey = (p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16;
    const bool repaint = static_cast<float>(grey) / 255.0f >= 0.5f;
    mask.f32()[i] = repaint != invert ? 1.0f : 0.0f;
  }
  return mask;
}

namespace {

double lanczos3(double x) {
  x = std::fabs(x);
  if (x < 1e-12) return 1.0;
  if (x >= 3.0) return 0.0;
  const double px = std::numbers::pi * x;
  return 3.0 * std::sin(px) * std::sin(px / 3.0) / (px * px);
}

// For each output index along one axis: the first source index and the normalised weights.
struct AxisWeights {
  std::vector<int> first;
  std::vector<std::vector<double>> weights;
};

AxisWeights axis_weights(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);  // widen the filter when shrinking
  const double support = 3.0 * filter_scale;
  AxisWeights a;
  for (int o = 0; o < out_size; ++o) {
    const double centre = (o + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(std::floor(centre - support)));
    const int hi = std::min(in_size, static_cast<int>(std::ceil(centre + support)));
    std::vector<double> w;
    double sum = 0;
    for (int i = lo; i < hi; ++i) {
      w.push_back(lanczos3((i + 0.5 - centre) / filter_scale));
      sum += w.back();
    }
    for (double& v : w) v /= sum;
    a.first.push_back(lo);
    a.weights.push_back(std::move(w));
  }
  return a;
}

}  // namespace

PngImage resize_picture(const PngImage& picture, int width, int height) {
  OTTER_CHECK(width > 0 && height > 0, "cannot resize a picture to ", width, "x", height);
  const int C = picture.channels, W = picture.width, H = picture.height;
  const AxisWeights ax = axis_weights(W, width), ay = axis_weights(H, height);
  // Horizontal pass into doubles, then vertical, rounded once at the end.
  std::vector<double> rows(static_cast<size_t>(H) * width * C);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < C; ++c) {
        double s = 0;
        const auto& w = ax.weights[static_cast<size_t>(x)];
        for (size_t k = 0; k < w.size(); ++k)
          s += w[k] * picture.pixels[(static_cast<size_t>(y) * W + ax.first[static_cast<size_t>(x)] + k) * C + c];
        rows[(static_cast<size_t>(y) * width + x) * C + c] = s;
      }
  PngImage out;
  out.width = width;
  out.height = height;
  out.channels = C;
  out.pixels.resize(static_cast<size_t>(height) * width * C);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < C; ++c) {
        double s = 0;
        const auto& w = ay.weights[static_cast<size_t>(y)];
        for (size_t k = 0; k < w.size(); ++k)
          s += w[k] * rows[((ay.first[static_cast<size_t>(y)] + k) * width + x) * C + c];
        out.pixels[(static_cast<size_t>(y) * width + x) * C + c] =
            static_cast<uint8_t>(std::clamp(std::nearbyint(s), 0.0, 255.0));
      }
  return out;
}

}  // namespace otter

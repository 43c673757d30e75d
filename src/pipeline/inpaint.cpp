#include "pipeline/inpaint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace otter {

Tensor latent_mask_of(const Tensor& mask_in, int factor) {
  const Tensor mask = mask_in.contiguous();
  const int64_t H = mask.dim(2), W = mask.dim(3), h = H / factor, w = W / factor;
  Tensor out = Tensor::empty(Shape{1, 1, h, w}, DType::F32);
  // torch nearest: source index floor(dst · in/out), here dst · factor.
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) out.f32()[y * w + x] = mask.f32()[(y * factor) * W + x * factor];
  return out;
}

Tensor masked_picture(const Tensor& pixels_in, const Tensor& mask_in) {
  const Tensor pixels = pixels_in.contiguous(), mask = mask_in.contiguous();
  const int64_t hw = mask.dim(2) * mask.dim(3);
  OTTER_CHECK(pixels.dim(2) * pixels.dim(3) == hw, "the mask is ", mask.dim(3), "x", mask.dim(2), " but the picture ",
              pixels.dim(3), "x", pixels.dim(2));
  Tensor out = Tensor::empty(pixels.shape(), DType::F32);
  for (int64_t c = 0; c < pixels.dim(1); ++c)
    for (int64_t i = 0; i < hw; ++i) {
      const float keep = mask.f32()[i] < 0.5f ? 1.0f : 0.0f;
      out.f32()[c * hw + i] = pixels.f32()[c * hw + i] * keep;
    }
  return out;
}

Denoiser with_inpainting_channels(Denoiser unet, Tensor latent_mask, Tensor masked_latents) {
  return [unet = std::move(unet), mask = std::move(latent_mask), masked = std::move(masked_latents)](
             const Tensor& x_in, float t, const Tensor& context, const RowPerturbation* perturbation) {
    const Tensor x = x_in.contiguous();
    const int64_t R = x.dim(0), C = x.dim(1), hw = x.dim(2) * x.dim(3);
    const int64_t extra = mask.dim(1) + masked.dim(1);
    Tensor in = Tensor::empty(Shape{R, C + extra, x.dim(2), x.dim(3)}, DType::F32);
    for (int64_t r = 0; r < R; ++r) {
      float* row = in.f32() + r * (C + extra) * hw;
      std::memcpy(row, x.f32() + r * C * hw, static_cast<size_t>(C * hw) * sizeof(float));
      std::memcpy(row + C * hw, mask.f32(), static_cast<size_t>(mask.dim(1) * hw) * sizeof(float));
      std::memcpy(row + (C + mask.dim(1)) * hw, masked.f32(), static_cast<size_t>(masked.dim(1) * hw) * sizeof(float));
    }
    return unet(in, t, context, perturbation);
  };
}

void blend_known_region(const Sampler& sampler, int k, const Tensor& image_latents, const Tensor& noise_in,
                        const Tensor& latent_mask, Tensor& latents) {
  const Tensor noise = noise_in.contiguous();
  const size_t per_row = static_cast<size_t>(image_latents.numel());
  const int64_t hw = latent_mask.numel(), C = image_latents.dim(1);
  // Scratch from the tensor pool: after the first step the loop asks the system for nothing.
  Tensor known_tensor = Tensor::empty(image_latents.shape(), DType::F32);
  const std::span<float> known(known_tensor.f32(), per_row);
  for (int64_t b = 0; b < latents.dim(0); ++b) {
    const std::span<const float> image(image_latents.f32(), per_row);
    if (k + 1 < sampler.num_evaluations())
      sampler.add_noise(image, std::span<const float>(noise.f32() + b * static_cast<int64_t>(per_row), per_row), k + 1,
                        known);
    else
      std::copy(image.begin(), image.end(), known.begin());
    float* row = latents.f32() + b * static_cast<int64_t>(per_row);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < hw; ++i) {
        const float m = latent_mask.f32()[i];
        // (1 - init_mask) * init_latents_proper + init_mask * latents, each product rounded.
        const float kept = (1.0f - m) * known[static_cast<size_t>(c * hw + i)];
        const float painted = m * row[c * hw + i];
        row[c * hw + i] = kept + painted;
      }
  }
}

namespace {

// The mask blurred separably by a truncated, normalised Gaussian (edges clamped).
std::vector<double> blurred(const Tensor& mask, double sigma) {
  const int64_t H = mask.dim(2), W = mask.dim(3);
  std::vector<double> a(static_cast<size_t>(H * W));
  for (int64_t i = 0; i < H * W; ++i) a[static_cast<size_t>(i)] = mask.f32()[i];
  if (sigma <= 0) return a;
  const int radius = static_cast<int>(std::ceil(3.0 * sigma));
  std::vector<double> kernel(static_cast<size_t>(2 * radius + 1));
  double sum = 0;
  for (int i = -radius; i <= radius; ++i) sum += kernel[static_cast<size_t>(i + radius)] = std::exp(-0.5 * i * i / (sigma * sigma));
  for (double& k : kernel) k /= sum;
  std::vector<double> tmp(a.size());
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      double s = 0;
      for (int i = -radius; i <= radius; ++i) s += kernel[static_cast<size_t>(i + radius)] * a[static_cast<size_t>(y * W + std::clamp<int64_t>(x + i, 0, W - 1))];
      tmp[static_cast<size_t>(y * W + x)] = s;
    }
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      double s = 0;
      for (int i = -radius; i <= radius; ++i) s += kernel[static_cast<size_t>(i + radius)] * tmp[static_cast<size_t>(std::clamp<int64_t>(y + i, 0, H - 1) * W + x)];
      a[static_cast<size_t>(y * W + x)] = s;
    }
  return a;
}

}  // namespace

Tensor overlay_on_input(const Tensor& generated, const Tensor& pixels_in, const Tensor& mask_in, double blur) {
  const Tensor pixels = pixels_in.contiguous(), mask = mask_in.contiguous();
  const int64_t B = generated.dim(0), H = generated.dim(1), W = generated.dim(2);
  OTTER_CHECK(mask.dim(2) == H && mask.dim(3) == W && pixels.dim(2) == H && pixels.dim(3) == W,
              "overlay: the image is ", W, "x", H, ", the mask ", mask.dim(3), "x", mask.dim(2));
  const std::vector<double> alpha = blurred(mask, blur);
  Tensor out = Tensor::empty(generated.shape(), DType::U8);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < H * W; ++i)
      for (int64_t c = 0; c < 3; ++c) {
        const size_t at = static_cast<size_t>((b * H * W + i) * 3 + c);
        // The input's own byte (the picture came from 8 bits: v = 2·(byte/255) − 1).
        const double input = std::nearbyint((static_cast<double>(pixels.f32()[c * H * W + i]) + 1.0) * 127.5);
        const double a = alpha[static_cast<size_t>(i)], gen = generated.data<uint8_t>()[at];
        out.data<uint8_t>()[at] = static_cast<uint8_t>(
            a <= 0 ? input : a >= 1 ? gen : std::clamp(std::nearbyint(input * (1 - a) + gen * a), 0.0, 255.0));
      }
  return out;
}

}  // namespace otter

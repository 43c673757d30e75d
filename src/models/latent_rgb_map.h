#pragma once
// A cheap latent -> RGB preview: an affine map from the latent channels to RGB, fitted once per VAE
// by least squares against the VAE's own decodes, applied at latent resolution and upsampled
// bilinearly (an affine map commutes with bilinear interpolation, so this equals mapping the
// upsampled latents — what the fit measures). No VAE call: a few multiply-adds per pixel, which is
// why the lab can show every step and the server can send a preview every step.
//
// It is only as good as the VAE is linear: SD's VAE decodes colour almost linearly from the
// latents, a tiny VAE less so. The fit records its error on images it was not fitted on.
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/tensor.h"

namespace otter {

class Vae;

struct LatentRgbMap {
  int channels = 4;
  std::vector<float> weights;  // [3][channels], row-major: rgb[k] = Σ_c weights[k·C + c]·latent[c] + bias[k]
  std::array<float, 3> bias{};

  // latents [C, h, w] (F32, as the sampler holds them) -> [h·scale, w·scale, 3] bytes.
  Tensor preview(const Tensor& latents, int scale) const;
  // The map's value in [-1, 1] units before clamping, for one latent pixel (tests).
  std::array<double, 3> apply(const float* latent_pixel, int64_t channel_stride) const;

  nlohmann::json to_json() const;
  static LatentRgbMap from_json(const nlohmann::json& j, const std::string& origin);
};

// How well a map reproduces the VAE: mean and 99th-percentile absolute error in levels of 255 per
// channel, over `images` images of `size`² pixels.
struct LatentRgbError {
  double mean_abs = 0, p99_abs = 0;
  int images = 0, size = 0;
};

// The fitting (and held-out) images: shapes — ellipses, rectangles, triangles — of random colours
// on plain or gradient backgrounds, drawn from `seed` alone (splitmix64, integer arithmetic), so
// every machine fits on the same pictures. [count, 3, size, size] F32 in [-1, 1].
Tensor latent_rgb_fit_images(int count, int size, uint64_t seed);

// Encodes `images` (mean of the latent distribution, scaled as the sampler's latents), decodes
// them, and fits the map to the decodes (clamped to [-1, 1]) by least squares over every pixel.
LatentRgbMap fit_latent_rgb_map(Backend& be, Vae& vae, const Tensor& images);

// The map against the VAE on `images`: each image encoded, its latents both decoded by the VAE and
// previewed by the map, both as bytes.
LatentRgbError latent_rgb_error(Backend& be, Vae& vae, const LatentRgbMap& map, const Tensor& images);

}  // namespace otter

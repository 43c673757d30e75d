#include "models/vae_tiling.h"

#include <algorithm>
#include <vector>

#include "core/error.h"

namespace otter {
namespace {

// Tile start positions covering [0, size) with tiles of `tile` and at least `overlap` shared.
std::vector<int64_t> tile_starts(int64_t size, int64_t tile, int64_t overlap) {
  if (size <= tile) return {0};
  const int64_t stride = tile - overlap;
  std::vector<int64_t> starts;
  for (int64_t s = 0;; s += stride) {
    if (s + tile >= size) {
      starts.push_back(size - tile);  // last tile flush with the edge
      break;
    }
    starts.push_back(s);
  }
  return starts;
}

// Blend weight along one axis for an image tile starting at `start` (image pixels) of length
// `len` in an image of `size`: ramps up over the overlap with the previous tile and down over the
// overlap with the next one; 1 at the image border.
float axis_weight(int64_t i, int64_t start, int64_t len, int64_t size, int64_t ramp) {
  float w = 1.0f;
  if (start > 0 && i < ramp) w = std::min(w, (static_cast<float>(i) + 0.5f) / static_cast<float>(ramp));
  if (start + len < size && i >= len - ramp)
    w = std::min(w, (static_cast<float>(len - i) - 0.5f) / static_cast<float>(ramp));
  return w;
}

}  // namespace

double estimated_decode_bytes(const Vae& vae, const Tensor& latents) {
  return estimated_decode_bytes(vae.config(), latents.dim(0), latents.dim(2), latents.dim(3));
}

double estimated_decode_bytes(const VaeConfig& c, int64_t images, int64_t h, int64_t w) {
  const double pixels = static_cast<double>(images) * static_cast<double>(h * w) * c.downscale_factor() *
                        c.downscale_factor();
  // The last up block runs block_out_channels[0] channels at full size; with the resnet's
  // input, norm output, conv output and the upsampler's input alive together, about 4 copies.
  return pixels * static_cast<double>(c.block_out_channels.front()) * 4.0 * sizeof(float);
}

Tensor decode_tiled(Vae& vae, Backend& be, const Tensor& latents_in, const VaeTiling& tiling) {
  OTTER_CHECK(tiling.tile > tiling.overlap && tiling.overlap >= 0, "VAE tiling: tile ", tiling.tile,
              " must be larger than the overlap ", tiling.overlap);
  const Tensor latents = latents_in.contiguous();
  const int64_t B = latents.dim(0), h = latents.dim(2), w = latents.dim(3);
  const int64_t f = vae.config().downscale_factor();
  const auto ys = tile_starts(h, tiling.tile, tiling.overlap), xs = tile_starts(w, tiling.tile, tiling.overlap);
  if (ys.size() == 1 && xs.size() == 1) return vae.decode(be, latents);

  const int64_t out_c = vae.config().out_channels, H = h * f, W = w * f;
  Tensor sum = Tensor::zeros(Shape{B, out_c, H, W}, DType::F32);
  std::vector<float> weight_sum(static_cast<size_t>(H * W), 0.0f);
  const int64_t ramp = tiling.overlap * f;
  for (int64_t y0 : ys) {
    for (int64_t x0 : xs) {
      const int64_t th = std::min(tiling.tile, h - y0), tw = std::min(tiling.tile, w - x0);
      // Copy the latent tile (decode needs a contiguous [B, C, th, tw]).
      Tensor tile = latents.slice(2, y0, y0 + th).slice(3, x0, x0 + tw).contiguous();
      const Tensor img = vae.decode(be, tile);
      const int64_t TH = th * f, TW = tw * f, Y0 = y0 * f, X0 = x0 * f;
      for (int64_t yy = 0; yy < TH; ++yy) {
        const float wy = axis_weight(yy, Y0, TH, H, ramp);
        for (int64_t xx = 0; xx < TW; ++xx) {
          const float wgt = wy * axis_weight(xx, X0, TW, W, ramp);
          weight_sum[static_cast<size_t>((Y0 + yy) * W + X0 + xx)] += wgt;
          for (int64_t b = 0; b < B; ++b)
            for (int64_t c = 0; c < out_c; ++c)
              sum.f32()[((b * out_c + c) * H + Y0 + yy) * W + X0 + xx] +=
                  wgt * img.f32()[((b * out_c + c) * TH + yy) * TW + xx];
        }
      }
    }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < out_c; ++c)
      for (int64_t i = 0; i < H * W; ++i) sum.f32()[(b * out_c + c) * H * W + i] /= weight_sum[static_cast<size_t>(i)];
  return sum;
}

}  // namespace otter

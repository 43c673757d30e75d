#pragma once
// Decoding large images in tiles, so the VAE decoder's activations (which dominate memory at
// high resolution: ~128-512 channels at full image size) fit a memory limit. Latents are cut into
// overlapping tiles, each tile is decoded on its own, and the overlaps are cross-faded with linear
// ramps so tile borders do not show. The result is close to, not equal to, a whole decode: the
// decoder's mid-block attention and its convolutions see only their tile.
#include <cstdint>

#include "backend/backend.h"
#include "models/vae.h"

namespace otter {

struct VaeTiling {
  int64_t tile = 64;     // tile size in latent pixels (64 = 512 image pixels)
  int64_t overlap = 16;  // overlap between neighbouring tiles, in latent pixels
};

// Decodes latents [B, C, h, w] tile by tile; same output as Vae::decode up to the tiling error.
Tensor decode_tiled(Vae& vae, Backend& be, const Tensor& latents, const VaeTiling& tiling);

// Rough peak memory of a whole (untiled) decode of `latents`, in bytes: the decoder's widest
// full-resolution activations, several alive at once.
double estimated_decode_bytes(const Vae& vae, const Tensor& latents);
// The same from the config, for `images` latents of h x w (the memory plan decides tiling with it).
double estimated_decode_bytes(const VaeConfig& config, int64_t images, int64_t h, int64_t w);

}  // namespace otter

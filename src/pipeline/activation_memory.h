#pragma once
// How much memory the networks' activations take, computed from the configs alone, before any
// weight is read: a replay of each forward pass (unet.cpp, vae.cpp, transformer2d.cpp, blocks.cpp)
// that allocates and frees byte counts instead of tensors, in the same order and with the same
// lifetimes (a C++ temporary lives to the end of its statement, a skip connection to its up block).
//
// What is replayed is what the process holds, not just what is live: the caching allocator keeps
// a freed block for the next request of its size, so its footprint is, per size class, the most
// blocks of that size ever live at once since the last release_cached_memory(); blocks from 4 MB
// up are whole 2 MB pages. Per precision the replay follows the backend's paths: f16 converts a
// convolution's input into a grow-only f16 scratch (fusing norm and upsampling) and a linear
// layer's into another; f32/bf16 materialise the normalised (and upsampled) input and run oneDNN,
// which reorders source and destination to its blocked layout around each convolution.
#include <cstdint>
#include <string>

#include "backend/backend.h"
#include "io/model_configs.h"

namespace otter {

struct ActivationBytes {
  double allocator = 0;  // the caching allocator's peak footprint
  double scratch = 0;    // grow-only per-thread scratch outside the allocator (f16 copies)
  double total() const { return allocator + scratch; }
};

// One UNet call on `rows` batch rows of [latent_channels, h, w] latents, context of `tokens`.
ActivationBytes unet_activation_bytes(const nlohmann::json& unet_config, int64_t rows, int64_t h, int64_t w,
                                      int64_t tokens, Precision precision, int threads);

// One VAE decode of `images` latents [C, h, w] (whole, not tiled).
ActivationBytes vae_decode_activation_bytes(const nlohmann::json& vae_config, int64_t images, int64_t h, int64_t w,
                                            Precision precision, int threads);

// One VAE encode of `images` pictures of [in_channels, H, W] (image to image's init picture).
ActivationBytes vae_encode_activation_bytes(const nlohmann::json& vae_config, int64_t images, int64_t height,
                                            int64_t width, Precision precision, int threads);

// The text encoder on `rows` windows of 77 tokens.
ActivationBytes text_encoder_activation_bytes(const nlohmann::json& text_encoder_config, int64_t rows,
                                              Precision precision, int threads);

}  // namespace otter

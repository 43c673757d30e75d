#pragma once
// The starting picture of image to image (and, later, inpainting): diffusers'
// StableDiffusionImg2ImgPipeline, step for step.
//
//   pixels   = png / 255 · 2 − 1                         VaeImageProcessor.preprocess
//   z        = VAE.encode(pixels).sample(generator)      the FIRST draw of the seeded generator
//   x_img    = scaling_factor · z                        one picture, repeated for every image
//   noise    = randn(B, 4, h, w, generator)              the second draw
//   t_start  = steps − min(⌊steps · strength⌋, steps)    get_timesteps
//   latents  = sampler.add_noise(x_img, noise, t_start · order)
//   denoise from evaluation t_start · order on, as text to image does (no init_noise_sigma)
//
// strength 1 starts from pure noise at the first timestep (still through add_noise: the picture's
// latents are kept at the smallest weight the schedule has there); small strengths keep more of it.
#include <optional>

#include "core/tensor.h"
#include "io/png.h"

namespace otter {

struct InitImage {
  // [1, 3, H, W] F32 in [-1, 1]: the same picture starts every image of the batch (diffusers
  // duplicates one picture's latents for every prompt and image).
  Tensor pixels{};
  // How much of the schedule runs: (0, 1]. diffusers' default is 0.8, the webui's 0.75.
  double strength = 0.75;
  // Inpainting (pipeline/inpaint.h): [1, 1, H, W] F32, 1 where the picture is repainted, 0 where it
  // is kept (mask_from_picture); undefined for image to image.
  Tensor mask{};
  // The final image is the input where the mask, blurred by a Gaussian of this standard deviation
  // in pixels, is 0, the generated image where it is 1, and a blend between (0: a hard edge).
  double mask_blur = 4.0;
};

// The first inference step img2img runs (diffusers' t_start); throws, naming --strength and
// --steps, when strength is outside (0, 1] or so small that no step would run.
int img2img_first_step(int steps, double strength);

// An 8-bit picture as the VAE's input: RGB, [1, 3, H, W], v / 255 · 2 − 1 in float32 (diffusers'
// pil_to_numpy then normalize). A picture with alpha is first put on white, as the webui does.
Tensor picture_to_vae_input(const PngImage& picture);

// diffusers' mask processing: grey as PIL's convert("L") computes it (0.299 R + 0.587 G + 0.114 B in
// 16-bit fixed point, rounded), then /255 and binarised at 0.5: 1 (repaint) where grey >= 128.
// Alpha is ignored (the mask is its colour). `invert` swaps the two (the webui's mask invert).
Tensor mask_from_picture(const PngImage& picture, bool invert = false);

// The picture resampled to width x height with a Lanczos-3 filter (widened by the scale factor
// when shrinking, so every source pixel counts), separably, rounded to 8 bits. PIL's
// Image.resize(LANCZOS) works the same way; its 8-bit fixed-point weights can differ by a level.
PngImage resize_picture(const PngImage& picture, int width, int height);

}  // namespace otter

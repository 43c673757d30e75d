#pragma once
// Inpainting: repaint the white part of a mask, keep the rest — diffusers'
// StableDiffusionInpaintPipeline step for step, for both kinds of model:
//
//   inpainting models (9-channel UNet, e.g. SD 1.5/2 inpainting): every UNet call sees
//     [latents, mask at latent size, latents of the picture with the masked part greyed out]
//   ordinary models (4-channel UNet): after every step the kept region is replaced by the
//     picture's latents noised to the next step's level (the same noise as the start), and by the
//     picture's latents themselves after the last step
//
// Draw order from the seeded generator: the picture's latent sample (skipped by an inpainting
// model at strength 1), the noise, then the masked picture's latent sample. At strength 1 the start
// is pure noise · init_noise_sigma; below 1 it is image to image's start. The mask reaches latent
// size by nearest sampling (the top-left pixel of each 8x8 block, torch's interpolate). The decoded
// image is finally laid over the input so that pixels outside the (blurred) mask are the input's.
#include "core/tensor.h"
#include "guidance/noise_prediction.h"
#include "sampling/sampler.h"

namespace otter {

// [1, 1, H, W] -> [1, 1, H/f, W/f]: torch.nn.functional.interpolate(mask, size) (mode nearest).
Tensor latent_mask_of(const Tensor& mask, int factor);

// The VAE's input with the repainted part removed: pixels · (mask < 0.5), as diffusers forms it.
Tensor masked_picture(const Tensor& pixels, const Tensor& mask);

// A 9-channel UNet's call: each row of x [R, 4, h, w] gets the mask and the masked picture's
// latents appended as channels ([1, 1, h, w] and [1, 4, h, w], the same for every row).
Denoiser with_inpainting_channels(Denoiser unet, Tensor latent_mask, Tensor masked_latents);

// A 4-channel model after the step of evaluation k: latents = (1 − m)·known + m·latents, where
// known is image_latents noised with `noise` to evaluation k + 1's level (or image_latents itself
// after the last evaluation); m is the latent mask; `noise` has latents' rows.
void blend_known_region(const Sampler& sampler, int k, const Tensor& image_latents, const Tensor& noise,
                        const Tensor& latent_mask, Tensor& latents);

// generated [B, H, W, 3] U8 laid over the input picture: out = input·(1 − a) + generated·a, a the
// mask blurred by a Gaussian of standard deviation `blur` pixels (truncated at 3σ; 0: the mask
// itself), rounded to 8 bits. Where a is 0 the input's bytes come back exactly.
Tensor overlay_on_input(const Tensor& generated, const Tensor& pixels, const Tensor& mask, double blur);

}  // namespace otter

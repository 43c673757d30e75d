#pragma once
// Smoothed Energy Guidance's perturbation (Hong 2024) as diffusers implements it
// (hooks/smoothed_energy_guidance_utils.py, _gaussian_blur_2d): the self-attention queries of
// rows [row_begin, row_end) of q [B, N, C] are blurred over the latent grid, taking the first
// side² tokens (side = floor(sqrt(N))) as a side x side image per channel.
//
//   sigma > threshold_inf: a depthwise Gaussian of sigma, kernel ceil(6·sigma) + 1 (made odd) but
//                          at most the grid (side, or side + 1 when side is even), reflect-padded;
//                          with diffusers' default sigma (9999999) that is a box filter over the grid
//   otherwise:             every query of a channel replaced by the channel's mean over the grid
//
// (The SEG paper's code takes the mean for an infinite sigma and the Gaussian otherwise; diffusers
// swapped the two branches. otter follows diffusers, the reference it is tested against.)
#include <cstdint>

#include "core/tensor.h"

namespace otter {

// q: contiguous F32 [B, N, C], changed in place.
void blur_query_rows(Tensor& q, int64_t row_begin, int64_t row_end, double sigma, double threshold_inf);

}  // namespace otter

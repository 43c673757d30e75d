#pragma once
// Classifier-free guidance: all of otter's guidance logic lives in this folder.
//
// One denoising step asks the UNet for two noise predictions of the same latents — conditioned on
// the prompt (cond) and on the empty or negative prompt (uncond) — and moves past the conditional
// one:  eps = eps_uncond + s·(eps_cond − eps_uncond).  Both come from ONE UNet call on the batch
// [uncond rows…, cond rows…] (latents duplicated, text embeddings concatenated, uncond block first
// as diffusers does), so one pass over the weights serves both halves.
//
//  - s = 1 is the conditional prediction alone: the uncond rows are not computed at all.
//  - s = 0 is the unconditional prediction; s < 0 guides away from the prompt. (diffusers turns
//    guidance off for every s <= 1; otter applies the formula for every s != 1.)
//  - guidance rescale φ (Lin et al. 2023) pulls the guided prediction's standard deviation back
//    towards the conditional one's, against over-exposure with v-prediction models.
//  - the scale may change per step (GuidanceSchedule); steps whose scale is 1 skip the uncond rows.
#include <cstdint>
#include <functional>

#include "core/tensor.h"
#include "guidance/guidance_schedule.h"
#include "guidance/noise_prediction.h"

namespace otter {

struct GuidanceOptions {
  GuidanceSchedule schedule = GuidanceSchedule::constant(7.5f);
  float rescale = 0.0f;  // φ in [0, 1]; 0 = off
  CfgBatching batching = CfgBatching::Batched;
};

// eps = uncond + scale·(cond − uncond), then the rescale if φ > 0 (diffusers' rescale_noise_cfg:
// per batch row, std over all other dims, unbiased).
Tensor combine_guidance(const Tensor& uncond_out, const Tensor& cond_out, float scale, float rescale);

class ClassifierFreeGuidance : public NoisePrediction {
 public:
  // uncond and cond are [B, 77, D] text embeddings, row i of each belonging to latent row i.
  ClassifierFreeGuidance(Tensor uncond, Tensor cond, GuidanceOptions options);

  // The guided noise prediction for latents x[B, ...] (already scaled for the model input) at
  // denoising step `step` of `steps`.
  Tensor predict(const Denoiser& model, const Tensor& x, float timestep, int step, int steps,
                 float sigma = NAN) override;

  // Whether step `step` needs the unconditional rows (scale != 1).
  bool needs_uncond(int step, int steps) const { return options_.schedule.at(step, steps) != 1.0f; }

  const GuidanceOptions& options() const { return options_; }
  // Rows the UNet has been asked to evaluate so far (B per cond pass, 2B per guided step).
  uint64_t unet_rows() const override { return unet_rows_; }
  uint64_t skipped_uncond_steps() const override { return skipped_uncond_steps_; }

 private:
  Tensor uncond_, cond_;
  Tensor both_;  // [uncond; cond], built once
  GuidanceOptions options_;
  uint64_t unet_rows_ = 0;
  uint64_t skipped_uncond_steps_ = 0;
};

}  // namespace otter

#pragma once
// Composable guidance (composable_prompt.h): for each image, K conditional predictions (one per
// sub-prompt) and one unconditional, all in ONE UNet call on rows [uncond (B)…, sub-prompts (R)…],
// combined as eps = u + Σ_k (c_k − u)·(w_k·s) — the webui's order of float32 operations, with
// w_k·s formed in double first. The scale follows the guidance schedule; every step needs the
// uncond rows (at s = 1 the sum is still not c unless there is one part of weight 1).
#include <cstdint>
#include <vector>

#include "guidance/classifier_free_guidance.h"
#include "guidance/noise_prediction.h"

namespace otter {

class ComposableGuidance : public NoisePrediction {
 public:
  // uncond [B, T, D]; conds [R, T, D] the sub-prompt rows in order, image_of[r] the latent row
  // (0..B-1) row r belongs to and weights[r] its weight. options.rescale must be 0.
  ComposableGuidance(Tensor uncond, Tensor conds, std::vector<int64_t> image_of, std::vector<double> weights,
                     GuidanceOptions options);

  Tensor predict(const Denoiser& model, const Tensor& x, float timestep, int step, int steps,
                 float sigma = NAN) override;
  uint64_t unet_rows() const override { return unet_rows_; }
  uint64_t skipped_uncond_steps() const override { return 0; }

 private:
  Tensor uncond_, conds_, all_;  // all_ = [uncond; conds], built once for the batched call
  std::vector<int64_t> image_of_;
  std::vector<double> weights_;
  GuidanceOptions options_;
  uint64_t unet_rows_ = 0;
};

}  // namespace otter

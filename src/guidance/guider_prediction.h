#pragma once
// Runs a Guider over the UNet: at each step the predictions the guider asks for are evaluated in
// one UNet call on rows [uncond…, cond…] (or one call each with CfgBatching::Split), and the
// guider combines them. Steps where it needs the conditional prediction alone cost B rows.
#include <memory>

#include "guidance/guider.h"
#include "guidance/noise_prediction.h"

namespace otter {

class GuiderPrediction : public NoisePrediction {
 public:
  // uncond and cond are [B, 77·k, D] text embeddings, row i of each belonging to latent row i.
  GuiderPrediction(Tensor uncond, Tensor cond, std::unique_ptr<Guider> guider, CfgBatching batching);

  Tensor predict(const Denoiser& model, const Tensor& x, float timestep, int step, int steps,
                 float sigma = NAN) override;
  uint64_t unet_rows() const override { return unet_rows_; }
  uint64_t skipped_uncond_steps() const override { return skipped_uncond_steps_; }

 private:
  Tensor uncond_, cond_, both_;
  std::unique_ptr<Guider> guider_;
  CfgBatching batching_;
  uint64_t unet_rows_ = 0, skipped_uncond_steps_ = 0;
};

}  // namespace otter

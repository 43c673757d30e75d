#pragma once
// Runs a Guider over the UNet: at each step the predictions the guider asks for are evaluated in
// one UNet call on rows [uncond…, cond…, perturbed…] (or one call each with CfgBatching::Split),
// and the guider combines them. The perturbed rows are the cond rows with the guider's change to
// the transformer blocks (PAG, SEG, SLG); auto-guidance makes that change on the uncond rows
// instead. Steps where the guider needs the conditional prediction alone cost B rows.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "guidance/guider.h"
#include "guidance/noise_prediction.h"

namespace otter {

class GuiderPrediction : public NoisePrediction {
 public:
  // uncond and cond are [B, 77·k, D] text embeddings, row i of each belonging to latent row i.
  // `transformer_blocks`: the UNet's block names (UNet::transformer_block_names()), which a
  // guider's perturbation chooses its layers from.
  GuiderPrediction(Tensor uncond, Tensor cond, std::unique_ptr<Guider> guider, CfgBatching batching,
                   const std::vector<std::string>& transformer_blocks = {});

  Tensor predict(const Denoiser& model, const Tensor& x, float timestep, int step, int steps,
                 float sigma = NAN) override;
  uint64_t unet_rows() const override { return unet_rows_; }
  uint64_t skipped_uncond_steps() const override { return skipped_uncond_steps_; }
  uint64_t perturbed_rows() const override { return perturbed_rows_; }
  Tensor renoise_prediction() const override { return renoise_; }

 private:
  Tensor finish(const GuiderStep& s, const Predictions& p);
  Tensor uncond_, cond_;
  Tensor context_uc_, context_ucp_, context_cp_;  // the batched calls' contexts, made once
  Tensor renoise_;
  std::unique_ptr<Guider> guider_;
  CfgBatching batching_;
  std::optional<RowPerturbation> perturbation_;
  bool perturb_uncond_ = false;
  uint64_t unet_rows_ = 0, skipped_uncond_steps_ = 0, perturbed_rows_ = 0;
};

// The guider's perturbation with its layers chosen among `transformer_blocks`; none if it has none.
std::optional<RowPerturbation> resolve_perturbation(const Guider& guider,
                                                    const std::vector<std::string>& transformer_blocks);

}  // namespace otter

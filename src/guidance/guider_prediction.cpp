#include "guidance/guider_prediction.h"

#include "core/error.h"

namespace otter {

GuiderPrediction::GuiderPrediction(Tensor uncond, Tensor cond, std::unique_ptr<Guider> guider, CfgBatching batching)
    : uncond_(std::move(uncond)), cond_(std::move(cond)), guider_(std::move(guider)), batching_(batching) {
  OTTER_CHECK(uncond_.shape() == cond_.shape(), "guidance: unconditional embeddings ", uncond_.describe(),
              " and conditional ", cond_.describe(), " must have the same shape");
  if (batching_ == CfgBatching::Batched) both_ = concat_rows(uncond_, cond_);
  guider_->reset();
}

Tensor GuiderPrediction::predict(const Denoiser& model, const Tensor& x, float timestep, int step, int steps,
                                 float sigma) {
  const int64_t B = x.dim(0);
  OTTER_CHECK(B == cond_.dim(0), "guidance: ", B, " latent rows but ", cond_.dim(0), " prompt embeddings");
  const GuiderStep s{step, steps, timestep, sigma};
  const Needs needs = guider_->needs(s);
  OTTER_CHECK(!needs.perturbed, guider_->name(), " needs a perturbed prediction, which otter's UNet cannot make yet");
  Predictions p;
  if (!needs.uncond) {
    ++skipped_uncond_steps_;
    unet_rows_ += static_cast<uint64_t>(B);
    p.cond = model(x, timestep, cond_);
  } else if (batching_ == CfgBatching::Split) {
    unet_rows_ += static_cast<uint64_t>(2 * B);
    p.uncond = model(x, timestep, uncond_);
    p.cond = model(x, timestep, cond_);
  } else {
    unet_rows_ += static_cast<uint64_t>(2 * B);
    const Tensor out = model(concat_rows(x, x), timestep, both_);
    p.uncond = out.slice(0, 0, B);
    p.cond = out.slice(0, B, 2 * B);
  }
  return guider_->combine(s, p);
}

}  // namespace otter

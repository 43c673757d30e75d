#pragma once
#include <vector>
// What the denoising loop asks of guidance: the guided noise prediction for latents x at a step,
// with the UNet evaluations it took counted. Classic CFG (classifier_free_guidance.h) and the
// guiders (guider_prediction.h) both answer it.
#include <cmath>
#include <cstdint>
#include <functional>

#include "core/tensor.h"
#include "models/row_perturbation.h"

namespace otter {

// One UNet evaluation: latents x[R, C, h, w] at `timestep`, conditioned on context[R, 77, D];
// `perturbation` (or null) changes some rows' transformer blocks (PAG, SEG, SLG).
using Denoiser =
    std::function<Tensor(const Tensor& x, float timestep, const Tensor& context, const RowPerturbation* perturbation)>;

enum class CfgBatching {
  Batched,  // one UNet call on all rows (fastest: one pass over the weights)
  Split,    // one call per prediction (less activation memory), identical results
};

class NoisePrediction {
 public:
  virtual ~NoisePrediction() = default;
  // The guided prediction for latents x[B, ...] (already scaled for the model input) at denoising
  // step `step` of `steps`; `sigma` is the evaluation's k-diffusion noise level (NaN: unknown).
  virtual Tensor predict(const Denoiser& model, const Tensor& x, float timestep, int step, int steps,
                         float sigma = NAN) = 0;
  // Rows the UNet has been asked to evaluate so far.
  virtual uint64_t unet_rows() const = 0;
  // Steps that ran without the unconditional rows.
  virtual uint64_t skipped_uncond_steps() const = 0;
  // Rows evaluated with a perturbation (PAG, SEG, SLG, auto-guidance; part of unet_rows()).
  virtual uint64_t perturbed_rows() const { return 0; }
  // CFG++: the prediction the sampler renoises with (the unconditional one) at the last predict();
  // undefined when the step is an ordinary one.
  virtual Tensor renoise_prediction() const { return {}; }
};

// [a; b] along dim 0 (both contiguous-able, equal row shapes and dtypes).
Tensor concat_rows(const Tensor& a, const Tensor& b);
// The same for any number of tensors, in order.
Tensor concat_rows(const std::vector<const Tensor*>& parts);

}  // namespace otter

#pragma once
// Guiders: the ways of turning a step's noise predictions into the one the sampler steps with.
// Classic CFG is one of them; diffusers' guiders (src/diffusers/guiders) are the reference, with
// their parameter names and defaults. One method per file (guidance/*_guider.cpp).
//
// A guider says which predictions it needs at a step (cond; uncond; a perturbed cond), the
// pipeline evaluates all of them in one UNet call — rows [uncond…, cond…, perturbed…] — and the
// guider combines them. Predictions a guider does not need at a step are not computed (CFG off
// outside its step window, or at scale 1). Stateful guiders (APG's momentum) keep their state per
// image row and are reset at the start of a run.
//
// Numerics follow diffusers' float32 order of operations; where diffusers computes in float64
// (APG's projection) or float32 on purpose (CFG-Zero*'s alpha, TCFG's SVD) the same is done, so
// ../shared/golden/guiders.json is matched to within its own float32-vs-float64 figures.
#include <cmath>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "models/row_perturbation.h"

namespace otter {

// The predictions a step needs besides the conditional one, which every guider uses. A plain
// value, so asking costs the denoising loop no allocation.
struct Needs {
  bool uncond = false;
  bool perturbed = false;
};

// What a guider's perturbed prediction changes in the UNet (PAG, SEG, SLG), or, for auto-guidance,
// what its "unconditional" prediction does (the degraded model: on_uncond). `layers` picks the
// transformer blocks by the names `otter info MODEL` lists (models/transformer_block_choice.h).
struct Perturbation {
  BlockPerturbation kind = BlockPerturbation::IdentitySelfAttention;
  nlohmann::json layers;
  double blur_sigma = 9999999.0, blur_threshold_inf = 9999.0;
  bool on_uncond = false;
};

struct GuiderStep {
  int step = 0;         // 0-based denoising step
  int steps = 1;        // num_inference_steps
  float timestep = 0;
  float sigma = NAN;    // the k-diffusion noise level of this evaluation (guidance intervals)
};

// The predictions of one step, each [B, C, h, w] f32; only those the guider asked for are defined.
struct Predictions {
  Tensor cond, uncond, perturbed;
};

class Guider {
 public:
  virtual ~Guider() = default;
  // diffusers' class name, e.g. "AdaptiveProjectedGuidance".
  virtual std::string name() const = 0;
  // The predictions step `s` needs (diffusers evaluates cond, then uncond, then perturbed).
  virtual Needs needs(const GuiderStep& s) const = 0;
  // The guided prediction. Stateful guiders must see every step of a run in order.
  virtual Tensor combine(const GuiderStep& s, const Predictions& p) = 0;
  // Forgets per-run state; called before step 0.
  virtual void reset() {}
  // CFG++: the sampler's step takes its denoised estimate from the guided prediction and its noise
  // direction from the unconditional one (Sampler::step_cfg_pp).
  virtual bool renoises_with_uncond() const { return false; }
  // Throws if the guider cannot work on latents of h x w (FDG's pyramid); called before any work.
  virtual void check_latent_size(int64_t /*h*/, int64_t /*w*/) const {}
  // The change a perturbed prediction (or auto-guidance's uncond) is made with; none by default.
  virtual std::optional<Perturbation> perturbation() const { return std::nullopt; }
};

// Builds a guider from diffusers' class name (or otter's short name: cfg, cfg_zero_star, apg,
// tcfg, mambo, pag, slg, seg, autoguidance, apg_mix, fdg, cfg_pp) and diffusers' constructor parameters (unknown keys are an error naming them).
std::unique_ptr<Guider> make_guider(const std::string& name, const nlohmann::json& params);

// `inner` applied only while the step's sigma is in (sigma_lo, sigma_hi] (Kynkäänniemi et al.
// 2024); elsewhere the conditional prediction alone, without evaluating the uncond rows.
std::unique_ptr<Guider> with_sigma_interval(std::unique_ptr<Guider> inner, double sigma_lo, double sigma_hi);

// `inner` until cos(cond, uncond) reaches `cosine_threshold` (smallest over the batch's images;
// Castillo et al. 2023); every later step evaluates the conditional rows alone.
std::unique_ptr<Guider> with_adaptive_skipping(std::unique_ptr<Guider> inner, double cosine_threshold);

}  // namespace otter

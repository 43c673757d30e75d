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
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"

namespace otter {

enum class Prediction { cond, uncond, perturbed };

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
  // The predictions step `s` needs, in diffusers' evaluation order (cond first).
  virtual std::vector<Prediction> needs(const GuiderStep& s) const = 0;
  // The guided prediction. Stateful guiders must see every step of a run in order.
  virtual Tensor combine(const GuiderStep& s, const Predictions& p) = 0;
  // Forgets per-run state; called before step 0.
  virtual void reset() {}
};

// Builds a guider from diffusers' class name (or otter's short name: cfg, cfg_zero_star, apg,
// tcfg, mambo) and diffusers' constructor parameters (unknown keys are an error naming them).
std::unique_ptr<Guider> make_guider(const std::string& name, const nlohmann::json& params);

// `inner` applied only while the step's sigma is in (sigma_lo, sigma_hi] (Kynkäänniemi et al.
// 2024); elsewhere the conditional prediction alone, without evaluating the uncond rows.
std::unique_ptr<Guider> with_sigma_interval(std::unique_ptr<Guider> inner, double sigma_lo, double sigma_hi);

// `inner` until cos(cond, uncond) reaches `cosine_threshold` (smallest over the batch's images;
// Castillo et al. 2023); every later step evaluates the conditional rows alone.
std::unique_ptr<Guider> with_adaptive_skipping(std::unique_ptr<Guider> inner, double cosine_threshold);

// The parts every CFG-family guider shares (guider_common.cpp).
namespace guider_detail {

// The parameters of diffusers' ClassifierFreeGuidance that the CFG family shares.
struct CfgParams {
  double guidance_scale = 7.5;
  double guidance_rescale = 0.0;
  bool use_original_formulation = false;
  double start = 0.0, stop = 1.0;
  bool enabled = true;
};

// Reads the shared keys from `params` (removing them from `rest`), with `default_scale`.
CfgParams read_cfg_params(const nlohmann::json& params, nlohmann::json& rest, double default_scale = 7.5);
// Throws naming the guider and any key left in `rest`.
void check_no_unknown(const std::string& guider, const nlohmann::json& rest);

// diffusers' step window: int(start·N) <= step < int(stop·N), products in double, truncated.
bool in_window(double start, double stop, const GuiderStep& s);
// diffusers' _is_cfg_enabled: enabled, in the window, and the scale not (math.isclose) 1 — or 0
// with the original formulation.
bool cfg_enabled(const CfgParams& p, const GuiderStep& s);

// rescale_noise_cfg: per batch row, x·(std(ref)/std(x)) mixed with x by r (unbiased std).
Tensor rescale(const Tensor& x, const Tensor& ref, double r);
// pred = u + s·d (diffusers) or c + s·d (original formulation), elementwise in f32.
Tensor guided(const Tensor& u, const Tensor& c, const Tensor& d, double scale, bool original);

}  // namespace guider_detail

}  // namespace otter

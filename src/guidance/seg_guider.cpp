// Smoothed energy guidance (Hong 2024; diffusers' SmoothedEnergyGuidance): the perturbed prediction
// is the conditional one with the self-attention queries of chosen layers blurred (a smoother
// attention energy landscape; models/query_blur.h), and guidance moves away from it:
// pred = u + s·(c − u) + sp·(c − p).
#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter {

using namespace guider_detail;

std::unique_ptr<Guider> make_seg_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams cfg = read_cfg_params(params, rest);
  PerturbedParams pg;
  pg.scale = take(rest, "seg_guidance_scale", 2.8);
  pg.start = take(rest, "seg_guidance_start", 0.0);
  pg.stop = take(rest, "seg_guidance_stop", 1.0);
  pg.perturbation.kind = BlockPerturbation::BlurredQueries;
  pg.perturbation.blur_sigma = take(rest, "seg_blur_sigma", 9999999.0);
  pg.perturbation.blur_threshold_inf = take(rest, "seg_blur_threshold_inf", 9999.0);
  OTTER_CHECK(pg.perturbation.blur_sigma > 0, "seg_blur_sigma must be positive, got ", pg.perturbation.blur_sigma);
  pg.perturbation.layers = take_layers(rest, "seg_guidance_layers", "seg_guidance_config");
  check_no_unknown("SmoothedEnergyGuidance", rest);
  return std::make_unique<PerturbedFamilyGuider>("SmoothedEnergyGuidance", cfg, pg);
}

}  // namespace otter

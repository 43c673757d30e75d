// Skip-layer guidance (SD3's; diffusers' SkipLayerGuidance): the perturbed prediction is the
// conditional one with chosen transformer blocks skipped (their input passes through), and
// guidance moves away from it:  pred = u + s·(c − u) + sp·(c − p).
#include "guidance/guider_parts.h"

namespace otter {

using namespace guider_detail;

std::unique_ptr<Guider> make_slg_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams cfg = read_cfg_params(params, rest);
  PerturbedParams pg;
  pg.scale = take(rest, "skip_layer_guidance_scale", 2.8);
  pg.start = take(rest, "skip_layer_guidance_start", 0.01);
  pg.stop = take(rest, "skip_layer_guidance_stop", 0.2);
  pg.perturbation.kind = BlockPerturbation::SkipBlock;
  pg.perturbation.layers = take_layers(rest, "skip_layer_guidance_layers", "skip_layer_config");
  check_no_unknown("SkipLayerGuidance", rest);
  return std::make_unique<PerturbedFamilyGuider>("SkipLayerGuidance", cfg, pg);
}

}  // namespace otter

// Perturbed-attention guidance (Ahn et al. 2024) as diffusers' PerturbedAttentionGuidance guider:
// a third prediction, the conditional one with the self-attention of chosen layers replaced by
// the identity (its value projection), is what guidance moves away from, beside or instead of the
// unconditional one:  pred = u + s·(c − u) + sp·(c − p).  For the PAG pipeline of diffusers 0.30.3
// (every step perturbed, pag_scale) see pag_pipeline_guider.cpp.
#include "guidance/guider_parts.h"

namespace otter {

using namespace guider_detail;

std::unique_ptr<Guider> make_pag_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams cfg = read_cfg_params(params, rest);
  PerturbedParams pg;
  pg.scale = take(rest, "perturbed_guidance_scale", 2.8);
  pg.start = take(rest, "perturbed_guidance_start", 0.01);
  pg.stop = take(rest, "perturbed_guidance_stop", 0.2);
  pg.perturbation.kind = BlockPerturbation::IdentitySelfAttention;
  pg.perturbation.layers = take_layers(rest, "perturbed_guidance_layers", "perturbed_guidance_config");
  check_no_unknown("PerturbedAttentionGuidance", rest);
  return std::make_unique<PerturbedFamilyGuider>("PerturbedAttentionGuidance", cfg, pg);
}

}  // namespace otter

#include <functional>
#include <map>

#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter {

std::unique_ptr<Guider> make_guider(const std::string& name, const nlohmann::json& params) {
  using Factory = std::function<std::unique_ptr<Guider>(const nlohmann::json&)>;
  // diffusers' class names and otter's short names for the same guider.
  static const std::map<std::string, Factory> factories{
      {"ClassifierFreeGuidance", make_cfg_guider},
      {"cfg", make_cfg_guider},
      {"ClassifierFreeZeroStarGuidance", make_cfg_zero_star_guider},
      {"cfg_zero_star", make_cfg_zero_star_guider},
      {"AdaptiveProjectedGuidance", make_apg_guider},
      {"apg", make_apg_guider},
      {"TangentialClassifierFreeGuidance", make_tcfg_guider},
      {"tcfg", make_tcfg_guider},
      {"MagnitudeAwareGuidance", make_mambo_guider},
      {"mambo", make_mambo_guider},
      {"StableDiffusionPAGPipeline", make_pag_pipeline_guider},
      {"pag", make_pag_pipeline_guider},
      {"PerturbedAttentionGuidance", make_pag_guider},
      {"SkipLayerGuidance", make_slg_guider},
      {"slg", make_slg_guider},
      {"SmoothedEnergyGuidance", make_seg_guider},
      {"seg", make_seg_guider},
      {"AdaptiveProjectedMixGuidance", make_apg_mix_guider},
      {"apg_mix", make_apg_mix_guider},
      {"FrequencyDecoupledGuidance", make_fdg_guider},
      {"fdg", make_fdg_guider},
      {"cfg_pp", make_cfg_pp_guider},
      {"CFG++", make_cfg_pp_guider},
      {"AutoGuidance", make_auto_guider},
      {"autoguidance", make_auto_guider},
  };
  const auto it = factories.find(name);
  if (it == factories.end()) {
    std::string known;
    for (const auto& [n, f] : factories) known += (known.empty() ? "" : ", ") + n;
    throw Error(cat("unknown guider '", name, "'; known: ", known));
  }
  return it->second(params);
}

}  // namespace otter

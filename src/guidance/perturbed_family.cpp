// What PAG, SEG and SLG share (diffusers gives the three guiders the same forward): the enable
// rules, the combination, and how their transformer layers are named.
#include <cmath>

#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter::guider_detail {

nlohmann::json take_layers(nlohmann::json& rest, const char* key, const char* config_key) {
  nlohmann::json layers = take(rest, key, nlohmann::json());
  const nlohmann::json short_form = take(rest, "layers", nlohmann::json());
  OTTER_CHECK(layers.is_null() || short_form.is_null(), "give ", key, " or layers (the same), not both");
  if (layers.is_null()) layers = short_form;
  nlohmann::json config = take(rest, config_key, nlohmann::json());
  OTTER_CHECK(layers.is_null() || config.is_null(), "give ", key, " or ", config_key, ", not both");
  if (!config.is_null()) {
    // diffusers' LayerSkipConfig / SmoothedEnergyGuidanceConfig: {"indices": [...], "fqn": "..."}.
    // With a UNet the fqn names where the blocks are (e.g. "mid_block.attentions.0.transformer_blocks");
    // "auto" (the default) counts every transformer block of the UNet, as otter info lists them.
    for (const nlohmann::json& c : config.is_array() ? config : nlohmann::json::array({config})) {
      OTTER_CHECK(c.is_object() && c.contains("indices"), config_key, " entries are objects with \"indices\", got ",
                  c.dump());
      const std::string fqn = c.value("fqn", std::string("auto"));
      for (const nlohmann::json& i : c["indices"].is_array() ? c["indices"] : nlohmann::json::array({c["indices"]})) {
        OTTER_CHECK(i.is_number_integer(), config_key, " indices are integers, got ", i.dump());
        if (fqn == "auto")
          layers.push_back(i);
        else
          layers.push_back(cat("^", fqn, "\\.", i.get<int>(), "\\."));
      }
    }
  }
  return layers.is_null() ? nlohmann::json("mid") : layers;
}

bool PerturbedFamilyGuider::perturbed_enabled(const GuiderStep& s) const {
  if (!cfg_.enabled || pg_.scale == 0.0) return false;
  const int first = static_cast<int>(pg_.start * s.steps), end = static_cast<int>(pg_.stop * s.steps);
  return first < s.step && s.step < end;
}

Tensor add_perturbed_term(const Tensor& base_in, const Tensor& c_in, const Tensor& p_in, double scale) {
  const Tensor base = base_in.contiguous(), c = c_in.contiguous(), p = p_in.contiguous();
  OTTER_CHECK(c.shape() == p.shape() && c.shape() == base.shape(), "guider: perturbed prediction ", p.describe(),
              " does not match the conditional ", c.describe());
  Tensor out = Tensor::empty(c.shape(), DType::F32);
  const float sp = static_cast<float>(scale);
  for (int64_t i = 0; i < c.numel(); ++i) {
    const float term = sp * (c.f32()[i] - p.f32()[i]);
    out.f32()[i] = base.f32()[i] + term;
  }
  return out;
}

Tensor PerturbedFamilyGuider::combine(const GuiderStep& s, const Predictions& pr) {
  const bool cfg = cfg_enabled(cfg_, s), pg = perturbed_enabled(s);
  const Tensor c = pr.cond.contiguous();
  Tensor pred;
  if (cfg) pred = guided(pr.uncond, c, difference(c, pr.uncond), cfg_.guidance_scale, cfg_.use_original_formulation);
  if (pg) {
    // Only the perturbed term: p + sp·(c − p), or c + sp·(c − p) in the original formulation.
    const Tensor& base = cfg ? pred : (cfg_.use_original_formulation ? c : pr.perturbed);
    pred = add_perturbed_term(base, c, pr.perturbed, pg_.scale);
  }
  if (!cfg && !pg) pred = c;
  return cfg_.guidance_rescale > 0 ? rescale(pred, c, cfg_.guidance_rescale) : pred;
}

}  // namespace otter::guider_detail

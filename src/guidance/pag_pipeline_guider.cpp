// Perturbed-attention guidance as diffusers 0.30.3's StableDiffusionPAGPipeline runs it (what SD
// 1.x/2.x users of diffusers call PAG; ../shared/golden/tiny-sd1_pag.json): rows [uncond, cond,
// perturbed] on EVERY step (no window), CFG when guidance_scale > 1, and
//   pred = u + s·(c − u) + ps·(c − p)       (without CFG: pred = c + ps·(c − p))
// with ps = pag_scale, or max(0, pag_scale − pag_adaptive_scale·(1000 − t)) when adaptive.
// pag_applied_layers are diffusers' layer patterns ("mid", "down_blocks.1", …) or otter's names.
#include <algorithm>

#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

class PagPipelineGuider : public Guider {
 public:
  PagPipelineGuider(double scale, double pag_scale, double adaptive, nlohmann::json layers)
      : scale_(scale), pag_scale_(pag_scale), adaptive_(adaptive) {
    perturbation_.kind = BlockPerturbation::IdentitySelfAttention;
    perturbation_.layers = std::move(layers);
  }
  std::string name() const override { return "StableDiffusionPAGPipeline"; }
  // The pipeline decides once: CFG when guidance_scale > 1, PAG when pag_scale > 0.
  Needs needs(const GuiderStep&) const override { return {scale_ > 1.0, pag_scale_ > 0.0}; }
  std::optional<Perturbation> perturbation() const override { return perturbation_; }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    const Tensor c = p.cond.contiguous();
    Tensor pred = scale_ > 1.0 ? guided(p.uncond, c, difference(c, p.uncond), scale_, false) : c;
    if (pag_scale_ <= 0.0) return pred;
    double ps = pag_scale_;
    if (adaptive_ > 0) ps = std::max(0.0, pag_scale_ - adaptive_ * (1000.0 - static_cast<double>(s.timestep)));
    return add_perturbed_term(pred, c, p.perturbed, ps);
  }

 private:
  double scale_, pag_scale_, adaptive_;
  Perturbation perturbation_;
};

}  // namespace

std::unique_ptr<Guider> make_pag_pipeline_guider(const nlohmann::json& params) {
  OTTER_CHECK(params.is_object() || params.is_null(), "guider parameters must be an object, got ", params.dump());
  nlohmann::json rest = params.is_null() ? nlohmann::json::object() : params;
  const double scale = take(rest, "guidance_scale", 7.5);
  const double pag_scale = take(rest, "pag_scale", 3.0);
  const double adaptive = take(rest, "pag_adaptive_scale", 0.0);
  nlohmann::json layers = take(rest, "pag_applied_layers", nlohmann::json());
  const nlohmann::json short_form = take(rest, "layers", nlohmann::json());
  OTTER_CHECK(layers.is_null() || short_form.is_null(), "give pag_applied_layers or layers (the same), not both");
  if (layers.is_null()) layers = short_form.is_null() ? nlohmann::json("mid") : short_form;
  OTTER_CHECK(take(rest, "guidance_rescale", 0.0) == 0.0,
              "pag (diffusers 0.30.3's PAG pipeline) has no working guidance_rescale; use PerturbedAttentionGuidance, "
              "which has, e.g. PerturbedAttentionGuidance:perturbed_guidance_start=0,perturbed_guidance_stop=1,"
              "guidance_rescale=0.7");
  OTTER_CHECK(pag_scale >= 0 && adaptive >= 0, "pag_scale and pag_adaptive_scale must be >= 0, got ", pag_scale, " and ",
              adaptive);
  check_no_unknown("pag (StableDiffusionPAGPipeline)", rest);
  return std::make_unique<PagPipelineGuider>(scale, pag_scale, adaptive, std::move(layers));
}

}  // namespace otter

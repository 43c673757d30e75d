// CFG-Zero* (Fan et al. 2025, arXiv 2503.18886), as diffusers' ClassifierFreeZeroStarGuidance:
// the first zero_init_steps steps predict zero; after that the unconditional prediction is scaled
// per image by alpha = <c, u> / (|u|² + 1e-8), the projection of c on u, before the CFG formula.
#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

class CfgZeroStarGuider : public CfgFamilyGuider {
 public:
  CfgZeroStarGuider(const CfgParams& p, int zero_init_steps) : CfgFamilyGuider(p), zero_init_steps_(zero_init_steps) {}
  std::string name() const override { return "ClassifierFreeZeroStarGuidance"; }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    // Zero-init wins over the step window and the scale (not over enabled = false); the rescale
    // still follows (diffusers then divides by std 0 and returns NaN).
    if (p_.enabled && s.step < zero_init_steps_) return finish(Tensor::zeros(p.cond.shape(), DType::F32), p.cond);
    return CfgFamilyGuider::combine(s, p);
  }

 protected:
  Tensor guide(const GuiderStep&, const Tensor& c, const Tensor& u) override {
    // u' = alpha_b · u per image (alpha in f32, as diffusers computes it).
    Tensor scaled = Tensor::empty(u.shape(), DType::F32);
    const int64_t rows = u.dim(0), n = u.numel() / rows;
    for (int64_t b = 0; b < rows; ++b) {
      double dot = 0, norm = 0;
      for (int64_t i = 0; i < n; ++i) {
        dot += static_cast<double>(c.f32()[b * n + i] * u.f32()[b * n + i]);
        norm += static_cast<double>(u.f32()[b * n + i] * u.f32()[b * n + i]);
      }
      const float alpha = static_cast<float>(dot) / (static_cast<float>(norm) + 1e-8f);
      for (int64_t i = 0; i < n; ++i) scaled.f32()[b * n + i] = u.f32()[b * n + i] * alpha;
    }
    return guided(scaled, c, difference(c, scaled), p_.guidance_scale, p_.use_original_formulation);
  }

 private:
  int zero_init_steps_;
};

}  // namespace

std::unique_ptr<Guider> make_cfg_zero_star_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest);
  const int zero_init_steps = take(rest, "zero_init_steps", 1);
  check_no_unknown("ClassifierFreeZeroStarGuidance", rest);
  return std::make_unique<CfgZeroStarGuider>(p, zero_init_steps);
}

}  // namespace otter

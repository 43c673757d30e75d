// Magnitude-aware guidance (MAMBO-G, arXiv 2508.03442), as diffusers' MagnitudeAwareGuidance: the
// scale shrinks per image where the guidance direction is large against the unconditional
// prediction, ratio = |c − u| / |u|:  s_b = 1 + (s − 1)·exp(−alpha·ratio),  pred = u + s_b·(c − u)
// (original formulation: s_b = s·exp(−alpha·ratio), pred = c + s_b·(c − u)).
#include <cmath>

#include "guidance/guider_factories.h"

namespace otter {
namespace {

using namespace guider_detail;

class MamboGuider : public Guider {
 public:
  MamboGuider(const CfgParams& p, double alpha) : p_(p), alpha_(alpha) {}
  std::string name() const override { return "MagnitudeAwareGuidance"; }
  std::vector<Prediction> needs(const GuiderStep& s) const override {
    if (cfg_enabled(p_, s)) return {Prediction::cond, Prediction::uncond};
    return {Prediction::cond};
  }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    Tensor pred;
    if (!cfg_enabled(p_, s)) {
      pred = p.cond.contiguous();
    } else {
      const Tensor c = p.cond.contiguous(), u = p.uncond.contiguous();
      const Tensor d = difference(c, u);
      const Tensor& base = p_.use_original_formulation ? c : u;
      pred = Tensor::empty(c.shape(), DType::F32);
      const int64_t rows = c.dim(0), n = c.numel() / rows;
      for (int64_t b = 0; b < rows; ++b) {
        double dd = 0, uu = 0;
        for (int64_t i = 0; i < n; ++i) {
          dd += static_cast<double>(d.f32()[b * n + i]) * d.f32()[b * n + i];
          uu += static_cast<double>(u.f32()[b * n + i]) * u.f32()[b * n + i];
        }
        // In f32 as diffusers' tensor ops: ratio, exp, the per-image scale.
        const float ratio = static_cast<float>(std::sqrt(dd)) / static_cast<float>(std::sqrt(uu));
        const float decay = std::exp(-static_cast<float>(alpha_) * ratio);
        const float scale = p_.use_original_formulation
                                ? static_cast<float>(p_.guidance_scale) * decay
                                : 1.0f + static_cast<float>(p_.guidance_scale - 1.0) * decay;
        for (int64_t i = 0; i < n; ++i) {
          const float step = scale * d.f32()[b * n + i];
          pred.f32()[b * n + i] = base.f32()[b * n + i] + step;
        }
      }
    }
    if (p_.guidance_rescale > 0) pred = rescale(pred, p.cond, p_.guidance_rescale);
    return pred;
  }

 private:
  CfgParams p_;
  double alpha_;
};

}  // namespace

std::unique_ptr<Guider> make_mambo_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest, /*default_scale=*/10.0);
  double alpha = 8.0;
  if (rest.contains("alpha")) {
    alpha = rest["alpha"].get<double>();
    rest.erase("alpha");
  }
  check_no_unknown("MagnitudeAwareGuidance", rest);
  return std::make_unique<MamboGuider>(p, alpha);
}

}  // namespace otter

// Magnitude-aware guidance (MAMBO-G, arXiv 2508.03442), as diffusers' MagnitudeAwareGuidance: the
// scale shrinks per image where the guidance direction is large against the unconditional
// prediction, ratio = |c − u| / |u|:  s_b = 1 + (s − 1)·exp(−alpha·ratio),  pred = u + s_b·(c − u)
// (original formulation: s_b = s·exp(−alpha·ratio), pred = c + s_b·(c − u)).
#include <cmath>

#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

class MamboGuider : public CfgFamilyGuider {
 public:
  MamboGuider(const CfgParams& p, double alpha) : CfgFamilyGuider(p), alpha_(alpha) {}
  std::string name() const override { return "MagnitudeAwareGuidance"; }

 protected:
  Tensor guide(const GuiderStep&, const Tensor& c, const Tensor& u) override {
    const Tensor d = difference(c, u);
    const Tensor& base = p_.use_original_formulation ? c : u;
    Tensor pred = Tensor::empty(c.shape(), DType::F32);
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
      const float scale = p_.use_original_formulation ? static_cast<float>(p_.guidance_scale) * decay
                                                      : 1.0f + static_cast<float>(p_.guidance_scale - 1.0) * decay;
      for (int64_t i = 0; i < n; ++i) {
        const float step = scale * d.f32()[b * n + i];
        pred.f32()[b * n + i] = base.f32()[b * n + i] + step;
      }
    }
    return pred;
  }

 private:
  double alpha_;
};

}  // namespace

std::unique_ptr<Guider> make_mambo_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest, /*default_scale=*/10.0);
  const double alpha = take(rest, "alpha", 8.0);
  check_no_unknown("MagnitudeAwareGuidance", rest);
  return std::make_unique<MamboGuider>(p, alpha);
}

}  // namespace otter

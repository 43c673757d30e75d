// APG mixed with CFG (HunyuanImage-2.1; diffusers' AdaptiveProjectedMixGuidance): classic CFG for
// the first adaptive_projected_guidance_start_step steps, adaptive projected guidance with its own
// scale after them; the momentum runs from the first guided step on, so the APG part starts with
// the direction averaged over the CFG steps.
#include <cmath>
#include <optional>

#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

struct MixParams {
  double apg_scale = 10.0;
  std::optional<double> momentum = -0.5;
  double norm_threshold = 10.0, eta = 0.0;
  int start_step = 5;
};

class ApgMixGuider : public CfgFamilyGuider {
 public:
  ApgMixGuider(const CfgParams& p, const MixParams& m) : CfgFamilyGuider(p), m_(m) {}
  std::string name() const override { return "AdaptiveProjectedMixGuidance"; }
  void reset() override { running_ = Tensor(); }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    if (s.step == 0) reset();  // diffusers makes the momentum buffer at step 0
    return CfgFamilyGuider::combine(s, p);
  }

 protected:
  Tensor guide(const GuiderStep& s, const Tensor& c, const Tensor& u) override {
    Tensor d = difference(c, u);
    if (m_.momentum) accumulate_momentum(running_, d, *m_.momentum);
    const bool apg = s.step > m_.start_step &&
                     !is_close(m_.apg_scale, p_.use_original_formulation ? 0.0 : 1.0);
    if (!apg) return CfgFamilyGuider::guide(s, c, u);
    if (m_.momentum) d = running_.clone();
    const int64_t rows = d.dim(0), n = d.numel() / rows;
    if (m_.norm_threshold > 0)
      for (int64_t b = 0; b < rows; ++b) {
        double sq = 0;
        for (int64_t i = 0; i < n; ++i) sq += static_cast<double>(d.f32()[b * n + i]) * d.f32()[b * n + i];
        const float factor = std::fmin(1.0f, static_cast<float>(m_.norm_threshold) / static_cast<float>(std::sqrt(sq)));
        for (int64_t i = 0; i < n; ++i) d.f32()[b * n + i] *= factor;
      }
    Tensor par, orth;
    project(d, c, par, orth);
    Tensor update = Tensor::empty(d.shape(), DType::F32);
    const float eta = static_cast<float>(m_.eta);
    for (int64_t i = 0; i < d.numel(); ++i) {
      const float scaled = eta * par.f32()[i];
      update.f32()[i] = orth.f32()[i] + scaled;
    }
    return guided(u, c, update, m_.apg_scale, p_.use_original_formulation);
  }

 private:
  MixParams m_;
  Tensor running_;
};

}  // namespace

std::unique_ptr<Guider> make_apg_mix_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest, 3.5);
  MixParams m;
  m.apg_scale = take(rest, "adaptive_projected_guidance_scale", 10.0);
  if (rest.contains("adaptive_projected_guidance_momentum")) {
    const nlohmann::json v = rest["adaptive_projected_guidance_momentum"];
    m.momentum = v.is_null() ? std::nullopt : std::optional<double>(v.get<double>());
    rest.erase("adaptive_projected_guidance_momentum");
  }
  m.norm_threshold = take(rest, "adaptive_projected_guidance_rescale", 10.0);
  m.eta = take(rest, "eta", 0.0);
  m.start_step = take(rest, "adaptive_projected_guidance_start_step", 5);
  check_no_unknown("AdaptiveProjectedMixGuidance", rest);
  return std::make_unique<ApgMixGuider>(p, m);
}

}  // namespace otter

// Classifier-free guidance as diffusers' ClassifierFreeGuidance guider: the classic formula within
// a step window (start/stop, fractions of the steps), diffusers' or the paper's formulation, and
// guidance rescale.  pred = u + s·(c − u)   or, original,   pred = c + s·(c − u).
#include "guidance/guider_factories.h"

namespace otter {
namespace {

using namespace guider_detail;

class CfgGuider : public Guider {
 public:
  explicit CfgGuider(const CfgParams& p) : p_(p) {}
  std::string name() const override { return "ClassifierFreeGuidance"; }
  std::vector<Prediction> needs(const GuiderStep& s) const override {
    if (cfg_enabled(p_, s)) return {Prediction::cond, Prediction::uncond};
    return {Prediction::cond};
  }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    Tensor pred = cfg_enabled(p_, s) ? guided(p.uncond, p.cond, difference(p.cond, p.uncond), p_.guidance_scale,
                                              p_.use_original_formulation)
                                     : p.cond.contiguous();
    if (p_.guidance_rescale > 0) pred = rescale(pred, p.cond, p_.guidance_rescale);
    return pred;
  }

 private:
  CfgParams p_;
};

}  // namespace

std::unique_ptr<Guider> make_cfg_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest);
  check_no_unknown("ClassifierFreeGuidance", rest);
  return std::make_unique<CfgGuider>(p);
}

}  // namespace otter

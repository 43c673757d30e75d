// CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion
// Models"): the guided prediction eps = u + λ·(c − u), with λ in [0, 1], gives the step's denoised
// estimate, and the sampler moves back to the next noise level along the UNCONDITIONAL prediction
// (Sampler::step_cfg_pp; euler and ddim), which keeps the sample near the data manifold, so a small
// λ guides about as much as a large CFG scale without its over-saturation. Every step evaluates
// the uncond rows (even at λ = 1, where the step still differs from the conditional one); outside
// start/stop the step is an ordinary conditional one.
#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

class CfgPlusPlusGuider : public Guider {
 public:
  explicit CfgPlusPlusGuider(const CfgParams& p) : p_(p) {}
  std::string name() const override { return "CFG++"; }
  Needs needs(const GuiderStep& s) const override { return {on(s), false}; }
  bool renoises_with_uncond() const override { return true; }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    const Tensor c = p.cond.contiguous();
    if (!on(s)) return c;
    return guided(p.uncond, c, difference(c, p.uncond), p_.guidance_scale, false);
  }

 private:
  bool on(const GuiderStep& s) const { return p_.enabled && in_window(p_.start, p_.stop, s); }
  CfgParams p_;
};

}  // namespace

std::unique_ptr<Guider> make_cfg_pp_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest, 0.6);
  OTTER_CHECK(p.guidance_rescale == 0.0 && !p.use_original_formulation,
              "CFG++ has no guidance_rescale or use_original_formulation (its sampler step replaces them)");
  check_no_unknown("CFG++ (cfg_pp)", rest);
  return std::make_unique<CfgPlusPlusGuider>(p);
}

}  // namespace otter

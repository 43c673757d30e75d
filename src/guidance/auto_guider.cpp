// Auto-guidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"), as
// diffusers' AutoGuidance guider: classifier-free guidance's formula, but the prediction guidance
// moves away from is the model's own with chosen transformer blocks skipped (a "bad version" of
// it), given the unconditional inputs. Its rows replace the uncond rows: no extra UNet rows.
#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

class AutoGuider : public CfgFamilyGuider {
 public:
  AutoGuider(const CfgParams& p, Perturbation degraded) : CfgFamilyGuider(p), degraded_(std::move(degraded)) {}
  std::string name() const override { return "AutoGuidance"; }
  std::optional<Perturbation> perturbation() const override { return degraded_; }

 private:
  Perturbation degraded_;
};

}  // namespace

std::unique_ptr<Guider> make_auto_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest);
  Perturbation degraded;
  degraded.kind = BlockPerturbation::SkipBlock;
  degraded.on_uncond = true;
  degraded.layers = take_layers(rest, "auto_guidance_layers", "auto_guidance_config");
  const double dropout = take(rest, "dropout", 1.0);
  OTTER_CHECK(dropout == 1.0, "AutoGuidance: dropout ", dropout,
              " would drop random activations of the skipped blocks, which no seed reproduces; otter supports "
              "dropout=1 (the blocks skipped)");
  check_no_unknown("AutoGuidance", rest);
  return std::make_unique<AutoGuider>(p, std::move(degraded));
}

}  // namespace otter

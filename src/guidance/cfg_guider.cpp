// Classifier-free guidance as diffusers' ClassifierFreeGuidance guider: the classic formula within
// a step window (start/stop, fractions of the steps), diffusers' or the paper's formulation, and
// guidance rescale.  pred = u + s·(c − u)   or, original,   pred = c + s·(c − u).
#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

class CfgGuider : public CfgFamilyGuider {
 public:
  using CfgFamilyGuider::CfgFamilyGuider;
  std::string name() const override { return "ClassifierFreeGuidance"; }
};

}  // namespace

std::unique_ptr<Guider> make_cfg_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest);
  check_no_unknown("ClassifierFreeGuidance", rest);
  return std::make_unique<CfgGuider>(p);
}

}  // namespace otter

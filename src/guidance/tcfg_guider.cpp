// Tangential CFG (Kwon et al. 2025, arXiv 2503.18137), as diffusers' TangentialClassifierFreeGuidance:
// per image, the unconditional prediction is replaced by its projection on the first right-singular
// vector of the 2 x N matrix [c; u] (the direction the two predictions share), which removes the
// part of u tangential to it; then the CFG formula with that u'.
#include <cmath>

#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

class TcfgGuider : public CfgFamilyGuider {
 public:
  using CfgFamilyGuider::CfgFamilyGuider;
  std::string name() const override { return "TangentialClassifierFreeGuidance"; }

 protected:
  Tensor guide(const GuiderStep&, const Tensor& c, const Tensor& u) override {
    Tensor projected = Tensor::empty(u.shape(), DType::F32);
    const int64_t rows = u.dim(0), n = u.numel() / rows;
    for (int64_t b = 0; b < rows; ++b) {
      const float* cb = c.f32() + b * n;
      const float* ub = u.f32() + b * n;
      // The top right-singular vector of M = [c; u] through the 2 x 2 Gram matrix G = M Mᵀ:
      // v = Mᵀa / |Mᵀa| for a the eigenvector of G's largest eigenvalue.
      double cc = 0, cu = 0, uu = 0;
      for (int64_t i = 0; i < n; ++i) {
        cc += static_cast<double>(cb[i]) * cb[i];
        cu += static_cast<double>(cb[i]) * ub[i];
        uu += static_cast<double>(ub[i]) * ub[i];
      }
      const double half_trace = (cc + uu) / 2, half_gap = (cc - uu) / 2;
      const double top = half_trace + std::sqrt(half_gap * half_gap + cu * cu);
      // (cu, top - cc) and (top - uu, cu) are both eigenvectors; take the better conditioned.
      double a0 = cu, a1 = top - cc;
      if (std::fabs(top - uu) + std::fabs(cu) > std::fabs(a0) + std::fabs(a1)) a0 = top - uu, a1 = cu;
      double vnorm = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double v = a0 * cb[i] + a1 * ub[i];
        vnorm += v * v;
      }
      vnorm = std::sqrt(vnorm);
      double along = 0;  // u · v
      for (int64_t i = 0; i < n; ++i) along += ub[i] * ((a0 * cb[i] + a1 * ub[i]) / vnorm);
      for (int64_t i = 0; i < n; ++i)
        projected.f32()[b * n + i] = static_cast<float>(along * ((a0 * cb[i] + a1 * ub[i]) / vnorm));
    }
    return guided(projected, c, difference(c, projected), p_.guidance_scale, p_.use_original_formulation);
  }
};

}  // namespace

std::unique_ptr<Guider> make_tcfg_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest);
  check_no_unknown("TangentialClassifierFreeGuidance", rest);
  return std::make_unique<TcfgGuider>(p);
}

}  // namespace otter

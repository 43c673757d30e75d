// Guidance in a limited interval of noise levels (Kynkäänniemi et al. 2024, "Applying guidance in a
// limited interval improves sample and distribution quality in diffusion models"): any guider,
// applied only while the evaluation's k-diffusion sigma is in (sigma_lo, sigma_hi]; outside it the
// prediction is the conditional one and the uncond rows are not evaluated at all. Guidance at high
// noise levels pulls samples towards a few modes, at low levels it barely matters, so the paper
// keeps the middle (SD-XL: (0.28, 5.42]).
#include <cmath>

#include "core/error.h"
#include "guidance/guider.h"

namespace otter {
namespace {

class IntervalGuider : public Guider {
 public:
  IntervalGuider(std::unique_ptr<Guider> inner, double lo, double hi) : inner_(std::move(inner)), lo_(lo), hi_(hi) {}
  std::string name() const override { return inner_->name(); }
  std::optional<Perturbation> perturbation() const override { return inner_->perturbation(); }
  void check_latent_size(int64_t h, int64_t w) const override { inner_->check_latent_size(h, w); }
  bool renoises_with_uncond() const override { return inner_->renoises_with_uncond(); }
  // Without a sigma (planning before the sampler exists) the inner guider's needs are the bound.
  Needs needs(const GuiderStep& s) const override { return std::isnan(s.sigma) || inside(s) ? inner_->needs(s) : Needs{}; }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    return inside(s) ? inner_->combine(s, p) : p.cond.contiguous();
  }
  void reset() override { inner_->reset(); }

 private:
  bool inside(const GuiderStep& s) const {
    OTTER_CHECK(!std::isnan(s.sigma), "a guidance interval needs the noise level of each step, which this caller "
                                      "does not give");
    return s.sigma > lo_ && s.sigma <= hi_;
  }
  std::unique_ptr<Guider> inner_;
  double lo_, hi_;
};

}  // namespace

std::unique_ptr<Guider> with_sigma_interval(std::unique_ptr<Guider> inner, double sigma_lo, double sigma_hi) {
  OTTER_CHECK(sigma_lo >= 0 && sigma_lo < sigma_hi, "a guidance interval needs 0 <= LO < HI, got ", sigma_lo, "..",
              sigma_hi);
  return std::make_unique<IntervalGuider>(std::move(inner), sigma_lo, sigma_hi);
}

}  // namespace otter

// Adaptive guidance (Castillo et al. 2023, "Adaptive Guidance: Training-free Acceleration of
// Conditional Diffusion Models"): late in sampling the conditional and unconditional predictions
// point the same way, and guidance changes little. Once their cosine similarity reaches a
// threshold, every later step evaluates the conditional rows alone.
//
// The decision is per UNet batch: the smallest cosine over the batch's images must reach the
// threshold. So images run in turns (--max-batch) may stop at different steps than in one batch.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "guidance/guider.h"

namespace otter {
namespace {

class AdaptiveSkipGuider : public Guider {
 public:
  AdaptiveSkipGuider(std::unique_ptr<Guider> inner, double threshold) : inner_(std::move(inner)), threshold_(threshold) {}
  std::string name() const override { return inner_->name(); }
  std::optional<Perturbation> perturbation() const override { return inner_->perturbation(); }
  void check_latent_size(int64_t h, int64_t w) const override { inner_->check_latent_size(h, w); }
  bool renoises_with_uncond() const override { return inner_->renoises_with_uncond(); }
  Needs needs(const GuiderStep& s) const override { return stopped_ ? Needs{} : inner_->needs(s); }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    if (stopped_) return p.cond.contiguous();
    if (!p.uncond.defined()) return inner_->combine(s, p);
    const Tensor c = p.cond.contiguous(), u = p.uncond.contiguous();
    const int64_t rows = c.dim(0), n = c.numel() / rows;
    double smallest = 1;
    for (int64_t b = 0; b < rows; ++b) {
      double cu = 0, cc = 0, uu = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double ci = c.f32()[b * n + i], ui = u.f32()[b * n + i];
        cu += ci * ui, cc += ci * ci, uu += ui * ui;
      }
      smallest = std::min(smallest, cu / std::sqrt(cc * uu));
    }
    Tensor out = inner_->combine(s, p);
    if (smallest >= threshold_) stopped_ = true;  // from the next step on
    return out;
  }
  void reset() override {
    stopped_ = false;
    inner_->reset();
  }

 private:
  std::unique_ptr<Guider> inner_;
  double threshold_;
  bool stopped_ = false;
};

}  // namespace

std::unique_ptr<Guider> with_adaptive_skipping(std::unique_ptr<Guider> inner, double cosine_threshold) {
  OTTER_CHECK(cosine_threshold > -1 && cosine_threshold <= 1, "adaptive guidance needs a cosine threshold in (-1, 1], got ",
              cosine_threshold);
  return std::make_unique<AdaptiveSkipGuider>(std::move(inner), cosine_threshold);
}

}  // namespace otter

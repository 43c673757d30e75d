// DDPM ancestral sampling (Ho et al. 2020), diffusers' DDPMScheduler: the mean of the posterior
// q(x_{t-1} | x_t, x0) with x0 predicted by the model, plus noise of the configured variance
// (formulas (6) and (7) of the paper). Draws one noise tensor per step except at t = 0.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "sampling/discrete_timestep_sampler.h"
#include "sampling/torch_sleef_math.h"

namespace otter::detail {

namespace {

class DdpmSampler final : public DiscreteTimestepSampler {
 public:
  explicit DdpmSampler(SchedulerConfig c) : DiscreteTimestepSampler(std::move(c)) {
    reject_thresholding(config_, "ddpm");
    const std::string& v = config_.variance_type;
    reject(v != "fixed_small" && v != "fixed_small_log" && v != "fixed_large", "ddpm",
           cat("\"variance_type\": \"", v, "\" (supported: fixed_small, fixed_small_log, fixed_large)"));
  }

  std::string name() const override { return "ddpm"; }

 protected:
  void do_step(std::span<const float> e, int index, std::span<float> x, NoiseGenerator& noise) override {
    const size_t n = x.size();
    const auto [t, a_t, a_prev] = alphas_at(index, 1.0f);
    const float b_t = 1.0f - a_t;
    const float b_prev = 1.0f - a_prev;
    const float cur_alpha = a_t / a_prev;
    const float cur_beta = 1.0f - cur_alpha;

    // 1. x0 from the model output, formula (15).
    std::vector<float> x0(n);
    const float sa = std::sqrt(a_t), sb = std::sqrt(b_t);
    for (size_t i = 0; i < n; ++i) {
      switch (config_.prediction_type) {
        case PredictionType::Epsilon: x0[i] = (x[i] - sb * e[i]) / sa; break;
        case PredictionType::Sample: x0[i] = e[i]; break;
        case PredictionType::VPrediction: x0[i] = sa * x[i] - sb * e[i]; break;
      }
    }
    if (config_.clip_sample) {
      const auto r = static_cast<float>(config_.clip_sample_range);
      for (float& v : x0) v = std::clamp(v, -r, r);
    }

    // 2. Posterior mean, formula (7).
    const float x0_coeff = (std::sqrt(a_prev) * cur_beta) / b_t;
    const float x_coeff = std::sqrt(cur_alpha) * b_prev / b_t;
    for (size_t i = 0; i < n; ++i) x[i] = x0_coeff * x0[i] + x_coeff * x[i];

    // 3. Posterior noise.
    if (t > 0) {
      std::vector<float> z(n);
      noise.randn(z.data(), n);
      // beta~_t = (1 - a_prev) / (1 - a_t) * beta_t, clamped away from zero for the log.
      const float variance = std::max((1.0f - a_prev) / (1.0f - a_t) * cur_beta, 1e-20f);
      float scale = 0;
      if (config_.variance_type == "fixed_small") scale = std::sqrt(variance);
      else if (config_.variance_type == "fixed_small_log") scale = torch_sleef::exp(0.5f * torch_sleef::log(variance));
      else scale = std::sqrt(cur_beta);  // fixed_large
      for (size_t i = 0; i < n; ++i) x[i] = x[i] + scale * z[i];
    }
  }
};

}  // namespace

std::unique_ptr<Sampler> make_ddpm_sampler(SchedulerConfig config) {
  return std::make_unique<DdpmSampler>(std::move(config));
}

}  // namespace otter::detail

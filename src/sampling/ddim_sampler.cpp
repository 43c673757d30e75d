// DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), diffusers' DDIMScheduler and
// SD 2.x's default. Each step predicts x0 and epsilon from the model output, then moves to the
// previous timestep along the deterministic DDIM path; eta > 0 adds fresh noise with eta times
// DDPM's posterior standard deviation (eta = 1 is DDPM-like ancestral sampling).
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "sampling/discrete_timestep_sampler.h"

namespace otter::detail {

namespace {

class DdimSampler final : public DiscreteTimestepSampler {
 public:
  DdimSampler(SchedulerConfig c, double eta) : DiscreteTimestepSampler(std::move(c)), eta_(eta) {
    reject_thresholding(config_, "ddim");
    OTTER_CHECK(eta_ >= 0, "ddim: eta must be >= 0, got ", eta_);
    final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0f : schedule_.alphas_cumprod.front();
  }

  std::string name() const override { return "ddim"; }

 protected:
  bool supports_cfg_pp() const override { return true; }

  void do_step(std::span<const float> e, int index, std::span<float> x, NoiseGenerator& noise) override {
    step_with(e, e, index, x, noise);
  }
  // CFG++ for DDIM (Chung et al. 2024, Algorithm 1): x0 from the guided prediction, the direction
  // term sqrt(1 − a_prev − σ²)·eps from the unconditional one.
  void do_step_cfg_pp(std::span<const float> e, std::span<const float> eu, int index, std::span<float> x,
                      NoiseGenerator& noise) override {
    step_with(e, eu, index, x, noise);
  }

 private:
  // x0 from `e`, eps from `e_dir` (the same prediction in plain DDIM).
  void step_with(std::span<const float> e, std::span<const float> e_dir, int index, std::span<float> x,
                 NoiseGenerator& noise) {
    const size_t n = x.size();
    const auto [t, a_t, a_prev] = alphas_at(index, final_alpha_cumprod_);
    const float b_t = 1.0f - a_t;
    const float sa = std::sqrt(a_t), sb = std::sqrt(b_t);

    // 1. x0 and epsilon from the model output.
    std::vector<float> x0(n), eps(n);
    for (size_t i = 0; i < n; ++i) {
      switch (config_.prediction_type) {
        case PredictionType::Epsilon:
          x0[i] = (x[i] - sb * e[i]) / sa;
          eps[i] = e_dir[i];
          break;
        case PredictionType::Sample:
          x0[i] = e[i];
          eps[i] = (x[i] - sa * e_dir[i]) / sb;
          break;
        case PredictionType::VPrediction:
          x0[i] = sa * x[i] - sb * e[i];
          eps[i] = sa * e_dir[i] + sb * x[i];
          break;
      }
    }
    if (config_.clip_sample) {
      const auto r = static_cast<float>(config_.clip_sample_range);
      for (float& v : x0) v = std::clamp(v, -r, r);
    }

    // 2. sigma_t(eta) = eta * sqrt((1-a_prev)/(1-a_t) * (1 - a_t/a_prev)), formula (16).
    const float b_prev = 1.0f - a_prev;
    const float variance = (b_prev / b_t) * (1.0f - a_t / a_prev);
    const float std_dev = static_cast<float>(eta_) * std::sqrt(variance);

    // 3. x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps (+ sigma z), formula (12).
    const float dir_coeff = std::sqrt(1.0f - a_prev - std_dev * std_dev);
    const float x0_coeff = std::sqrt(a_prev);
    for (size_t i = 0; i < n; ++i) x[i] = x0_coeff * x0[i] + dir_coeff * eps[i];
    if (eta_ > 0) {
      std::vector<float> z(n);
      noise.randn(z.data(), n);
      for (size_t i = 0; i < n; ++i) x[i] = x[i] + std_dev * z[i];
    }
  }

  double eta_;
  float final_alpha_cumprod_ = 1.0f;
};

}  // namespace

std::unique_ptr<Sampler> make_ddim_sampler(SchedulerConfig config, double eta) {
  return std::make_unique<DdimSampler>(std::move(config), eta);
}

}  // namespace otter::detail

// Heun (Karras et al. 2022, Algorithm 1 without churn), diffusers' HeunDiscreteScheduler.
//
// Each step from sigma_i to sigma_{i+1} evaluates the UNet twice: an Euler step to sigma_{i+1}
// (first order), then the derivative there averaged with the first one, applied again from the
// starting sample (second order). The last step goes to sigma = 0 and is Euler only, so n steps
// take 2n - 1 evaluations. Evaluation k uses sigmas()[k] for the UNet input: the sigma schedule
// is [s_0, s_1, s_1, s_2, s_2, ..., s_{n-1}, s_{n-1}, 0].
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "sampling/sampler_common.h"

namespace otter::detail {

namespace {

class HeunSampler final : public Sampler {
 public:
  explicit HeunSampler(SchedulerConfig c)
      : Sampler(std::move(c)),
        train_sigmas_(sigmas_from_alphas_cumprod(make_training_schedule(config_).alphas_cumprod)) {}

  std::string name() const override { return "heun"; }

  void set_timesteps(int n) override {
    const SigmaSteps s = k_sigma_steps(config_, n, /*float32_linspace=*/true, train_sigmas_);
    std::vector<float> base_sigmas = to_float(s.sigmas);
    base_sigmas.push_back(0.0f);
    const std::vector<float> base_timesteps = to_float(s.timesteps);
    // Interior sigmas and all timesteps but the first are visited twice.
    std::vector<float> sigmas = {base_sigmas.front()}, timesteps = {base_timesteps.front()};
    for (size_t i = 1; i + 1 < base_sigmas.size(); ++i) sigmas.insert(sigmas.end(), 2, base_sigmas[i]);
    sigmas.push_back(base_sigmas.back());
    for (size_t i = 1; i < base_timesteps.size(); ++i) timesteps.insert(timesteps.end(), 2, base_timesteps[i]);
    first_derivative_.clear();
    first_sample_.clear();
    reset_schedule(std::move(timesteps), std::move(sigmas));
  }

  int order() const override { return 2; }
  float init_noise_sigma() const override { return sigma_init_noise_sigma(sigmas(), config_.timestep_spacing); }

 protected:
  void do_scale_model_input(std::span<float> x, int index) const override {
    scale_by_sigma(x, sigmas()[static_cast<size_t>(index)]);
  }

  void do_step(std::span<const float> e, int index, std::span<float> x, NoiseGenerator&) override {
    const size_t n = x.size();
    const auto k = static_cast<size_t>(index);
    const bool first_order = first_derivative_.empty();
    const float sigma = first_order ? sigmas()[k] : sigmas()[k - 1];
    const float sigma_next = first_order ? sigmas()[k + 1] : sigmas()[k];
    const float sigma_hat = sigma * 1.0f;  // gamma = 0
    const float sigma_input = first_order ? sigma_hat : sigma_next;

    std::vector<float> x0(n);
    denoised_from_sigma(config_.prediction_type, sigma_input, e, x, x0);
    if (config_.clip_sample) {
      const auto r = static_cast<float>(config_.clip_sample_range);
      for (float& v : x0) v = std::clamp(v, -r, r);
    }

    if (first_order) {
      dt_ = sigma_next - sigma_hat;
      first_derivative_.resize(n);
      first_sample_.assign(x.begin(), x.end());
      for (size_t i = 0; i < n; ++i) {
        first_derivative_[i] = (x[i] - x0[i]) / sigma_hat;
        x[i] = x[i] + first_derivative_[i] * dt_;
      }
    } else {
      for (size_t i = 0; i < n; ++i) {
        const float d = (x[i] - x0[i]) / sigma_next;
        const float avg = (first_derivative_[i] + d) / 2.0f;
        x[i] = first_sample_[i] + avg * dt_;
      }
      first_derivative_.clear();
      first_sample_.clear();
    }
  }

 private:
  std::vector<float> train_sigmas_;
  // State between the two halves of a step (empty = the next evaluation is first order).
  std::vector<float> first_derivative_;
  std::vector<float> first_sample_;
  float dt_ = 0;
};

}  // namespace

std::unique_ptr<Sampler> make_heun_sampler(SchedulerConfig config) {
  return std::make_unique<HeunSampler>(std::move(config));
}

}  // namespace otter::detail

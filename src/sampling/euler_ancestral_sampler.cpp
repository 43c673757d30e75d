// Euler ancestral (k-diffusion's sample_euler_ancestral), diffusers' EulerAncestralDiscreteScheduler.
//
// Each step goes down from sigma to sigma_down with an Euler step, then adds fresh noise of
// standard deviation sigma_up, where sigma_down^2 + sigma_up^2 = sigma_next^2 (eta = 1). One
// noise draw per step, after the deterministic part, as diffusers.
#include <cmath>

#include "core/error.h"
#include "sampling/sampler_common.h"

namespace otter::detail {

namespace {

class EulerAncestralSampler final : public Sampler {
 public:
  explicit EulerAncestralSampler(SchedulerConfig c)
      : Sampler(std::move(c)),
        train_sigmas_(sigmas_from_alphas_cumprod(
            make_training_schedule(config_, /*clamp_final_alpha=*/true).alphas_cumprod)) {
    // EulerAncestralDiscreteScheduler has no Karras option in diffusers 0.30.
    config_.use_karras_sigmas = false;
  }

  std::string name() const override { return "euler_a"; }

  void set_timesteps(int n) override {
    const SigmaSteps s = k_sigma_steps(config_, n, /*float32_linspace=*/true, train_sigmas_);
    std::vector<float> sigmas = to_float(s.sigmas);
    sigmas.push_back(0.0f);
    reset_schedule(to_float(s.timesteps), std::move(sigmas));
  }

  float init_noise_sigma() const override { return sigma_init_noise_sigma(sigmas(), config_.timestep_spacing); }

 protected:
  void do_scale_model_input(std::span<float> x, int index) const override {
    scale_by_sigma(x, sigmas()[static_cast<size_t>(index)]);
  }

  void do_step(std::span<const float> e, int index, std::span<float> x, NoiseGenerator& noise) override {
    const size_t n = x.size();
    const float sigma = sigmas()[static_cast<size_t>(index)];
    const float sigma_to = sigmas()[static_cast<size_t>(index) + 1];
    std::vector<float> x0(n);
    denoised_from_sigma(config_.prediction_type, sigma, e, x, x0);

    const float from2 = sigma * sigma, to2 = sigma_to * sigma_to;
    const float sigma_up = std::sqrt(to2 * (from2 - to2) / from2);
    const float sigma_down = std::sqrt(to2 - sigma_up * sigma_up);
    const float dt = sigma_down - sigma;
    for (size_t i = 0; i < n; ++i) {
      const float derivative = (x[i] - x0[i]) / sigma;
      x[i] = x[i] + derivative * dt;
    }
    std::vector<float> z(n);
    noise.randn(z.data(), n);
    for (size_t i = 0; i < n; ++i) x[i] = x[i] + z[i] * sigma_up;
  }

 private:
  std::vector<float> train_sigmas_;
};

}  // namespace

std::unique_ptr<Sampler> make_euler_ancestral_sampler(SchedulerConfig config) {
  return std::make_unique<EulerAncestralSampler>(std::move(config));
}

}  // namespace otter::detail

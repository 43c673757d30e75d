// Euler (Karras et al. 2022, Algorithm 2 without churn), diffusers' EulerDiscreteScheduler:
// x += (x - x0)/sigma * (sigma_next - sigma).
//
// diffusers draws a noise tensor every step even though it only uses it when s_churn > 0 (never
// in the pipelines); otter draws it too so the generator advances exactly as in diffusers.
#include <cmath>

#include "core/error.h"
#include "sampling/sampler_common.h"
#include "sampling/torch_sleef_math.h"

namespace otter::detail {

namespace {

class EulerSampler final : public Sampler {
 public:
  explicit EulerSampler(SchedulerConfig c)
      : Sampler(std::move(c)),
        train_sigmas_(sigmas_from_alphas_cumprod(
            make_training_schedule(config_, /*clamp_final_alpha=*/true).alphas_cumprod)) {
    reject(config_.interpolation_type != "linear", "euler",
           cat("\"interpolation_type\": \"", config_.interpolation_type, "\""));
    reject(config_.timestep_type != "discrete" && config_.timestep_type != "continuous", "euler",
           cat("\"timestep_type\": \"", config_.timestep_type, "\""));
    reject(config_.final_sigmas_type != "zero" && config_.final_sigmas_type != "sigma_min", "euler",
           cat("\"final_sigmas_type\": \"", config_.final_sigmas_type, "\""));
  }

  std::string name() const override { return "euler"; }

  void set_timesteps(int n) override {
    const SigmaSteps s =
        k_sigma_steps(config_, n, /*float32_linspace=*/true, train_sigmas_, config_.sigma_min, config_.sigma_max);
    std::vector<float> sigmas = to_float(s.sigmas);
    sigmas.push_back(config_.final_sigmas_type == "sigma_min" ? train_sigmas_.front() : 0.0f);
    std::vector<float> timesteps;
    if (config_.timestep_type == "continuous" && config_.prediction_type == PredictionType::VPrediction) {
      // EDM-style conditioning: c_noise = log(sigma) / 4.
      for (size_t i = 0; i + 1 < sigmas.size(); ++i) timesteps.push_back(0.25f * torch_sleef::log(sigmas[i]));
    } else {
      timesteps = to_float(s.timesteps);
    }
    reset_schedule(std::move(timesteps), std::move(sigmas));
  }

  float init_noise_sigma() const override { return sigma_init_noise_sigma(sigmas(), config_.timestep_spacing); }
  bool supports_cfg_pp() const override { return true; }

 protected:
  void do_scale_model_input(std::span<float> x, int index) const override {
    scale_by_sigma(x, sigmas()[static_cast<size_t>(index)]);
  }

  void do_step(std::span<const float> e, int index, std::span<float> x, NoiseGenerator& noise) override {
    const size_t n = x.size();
    const float sigma = sigmas()[static_cast<size_t>(index)];
    // s_churn = 0: gamma = 0 and sigma_hat = sigma * (gamma + 1) = sigma; the noise is unused.
    std::vector<float> unused_noise(n);
    noise.randn(unused_noise.data(), n);
    const float sigma_hat = sigma * 1.0f;

    std::vector<float> x0(n);
    // diffusers uses sigma_hat for epsilon and sigma for v; equal without churn.
    denoised_from_sigma(config_.prediction_type, config_.prediction_type == PredictionType::Epsilon ? sigma_hat : sigma,
                        e, x, x0);
    const float dt = sigmas()[static_cast<size_t>(index) + 1] - sigma_hat;
    for (size_t i = 0; i < n; ++i) {
      const float derivative = (x[i] - x0[i]) / sigma_hat;
      x[i] = x[i] + derivative * dt;
    }
  }

  // CFG++ for Euler (as k-diffusion's sample_euler_cfg_pp): x = x0(guided) + sigma_next·(x − x0(uncond))/sigma.
  void do_step_cfg_pp(std::span<const float> e, std::span<const float> eu, int index, std::span<float> x,
                      NoiseGenerator& noise) override {
    const size_t n = x.size();
    const float sigma = sigmas()[static_cast<size_t>(index)];
    std::vector<float> unused_noise(n);  // drawn as step() draws it, so the generator stays in step
    noise.randn(unused_noise.data(), n);
    std::vector<float> x0(n), x0u(n);
    denoised_from_sigma(config_.prediction_type, sigma, e, x, x0);
    denoised_from_sigma(config_.prediction_type, sigma, eu, x, x0u);
    const float sigma_next = sigmas()[static_cast<size_t>(index) + 1];
    for (size_t i = 0; i < n; ++i) {
      const float direction = (x[i] - x0u[i]) / sigma;
      x[i] = x0[i] + direction * sigma_next;
    }
  }

 private:
  std::vector<float> train_sigmas_;
};

}  // namespace

std::unique_ptr<Sampler> make_euler_sampler(SchedulerConfig config) {
  return std::make_unique<EulerSampler>(std::move(config));
}

}  // namespace otter::detail

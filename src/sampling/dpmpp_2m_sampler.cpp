// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), diffusers'
// DPMSolverMultistepScheduler with algorithm_type "dpmsolver++" and solver_order 2, with or
// without Karras sigmas.
//
// Works in the half log-SNR lambda = log(alpha_t / sigma_t) with data (x0) predictions: a
// first-order step is x_t = (sigma_t/sigma_s) x_s - alpha_t (e^{-h} - 1) x0, h = lambda_t -
// lambda_s; the second-order step adds a finite-difference correction from the previous x0.
// The first step (no history) and, for short schedules or a final sigma of 0, the last step
// are first order.
#include <cmath>

#include "core/error.h"
#include "sampling/sampler_common.h"
#include "sampling/torch_sleef_math.h"

namespace otter::detail {

namespace {

class DpmppTwoMSampler final : public Sampler {
 public:
  DpmppTwoMSampler(SchedulerConfig c, std::string name)
      : Sampler(std::move(c)),
        name_(std::move(name)),
        schedule_(make_training_schedule(config_, /*clamp_final_alpha=*/true)) {
    reject_thresholding(config_, name_);
    reject(config_.algorithm_type != "dpmsolver++", name_,
           cat("\"algorithm_type\": \"", config_.algorithm_type, "\" (only dpmsolver++)"));
    reject(config_.solver_order != 1 && config_.solver_order != 2, name_,
           cat("\"solver_order\": ", config_.solver_order, " (only 1 or 2)"));
    reject(config_.solver_type != "midpoint" && config_.solver_type != "heun", name_,
           cat("\"solver_type\": \"", config_.solver_type, "\""));
    reject(!config_.variance_type.empty(), name_, cat("\"variance_type\": \"", config_.variance_type, "\""));
    reject(config_.use_lu_lambdas, name_, "\"use_lu_lambdas\": true");
  }

  std::string name() const override { return name_; }

  void set_timesteps(int n) override {
    // lambda_min_clipped cuts off the noisiest timesteps (for cosine schedules); -inf keeps all.
    int64_t clipped = 0;
    for (float ac : schedule_.alphas_cumprod) {
      const float lambda = torch_sleef::log(std::sqrt(ac)) - torch_sleef::log(std::sqrt(1.0f - ac));
      if (lambda < static_cast<float>(config_.lambda_min_clipped)) ++clipped;
    }
    const MultistepSchedule m = multistep_schedule(config_, n, schedule_, config_.num_train_timesteps - clipped);
    previous_x0_.clear();
    lower_order_nums_ = 0;
    reset_schedule(to_float(m.timesteps), m.sigmas);
  }

 protected:
  void do_add_noise(std::span<const float> original, std::span<const float> noise, int index,
                    std::span<float> out) const override {
    add_noise_alpha_sigma(sigmas()[static_cast<size_t>(index)], original, noise, out);
  }

  void do_step(std::span<const float> e, int index, std::span<float> x, NoiseGenerator&) override {
    const size_t n = x.size();
    const int steps = num_evaluations();
    const bool last = index == steps - 1;
    const bool lower_order_final =
        last && (config_.euler_at_final || (config_.lower_order_final && steps < 15) || config_.final_sigmas_type == "zero");
    // (diffusers' lower_order_second only matters for third-order solvers.)

    // Model output -> x0 at this sigma.
    const AlphaSigma s0 = alpha_sigma_from_sigma(sigmas()[static_cast<size_t>(index)]);
    std::vector<float> x0(n);
    for (size_t i = 0; i < n; ++i) {
      switch (config_.prediction_type) {
        case PredictionType::Epsilon: x0[i] = (x[i] - s0.sigma * e[i]) / s0.alpha; break;
        case PredictionType::Sample: x0[i] = e[i]; break;
        case PredictionType::VPrediction: x0[i] = s0.alpha * x[i] - s0.sigma * e[i]; break;
      }
    }

    const AlphaSigma t = alpha_sigma_from_sigma(sigmas()[static_cast<size_t>(index) + 1]);
    const float lambda_t = lambda_of(t), lambda_s0 = lambda_of(s0);
    const float h = lambda_t - lambda_s0;
    const float ratio = t.sigma / s0.sigma;
    const float phi = t.alpha * (torch_sleef::exp(-h) - 1.0f);  // alpha_t (e^{-h} - 1)

    if (config_.solver_order == 1 || lower_order_nums_ < 1 || lower_order_final) {
      for (size_t i = 0; i < n; ++i) x[i] = ratio * x[i] - phi * x0[i];
    } else {
      const AlphaSigma s1 = alpha_sigma_from_sigma(sigmas()[static_cast<size_t>(index) - 1]);
      const float h_0 = lambda_s0 - lambda_of(s1);
      const float r0 = h_0 / h;
      const float inv_r0 = 1.0f / r0;
      const std::vector<float>& m1 = previous_x0_;
      if (config_.solver_type == "midpoint") {
        const float half_phi = 0.5f * phi;
        for (size_t i = 0; i < n; ++i) {
          const float d1 = inv_r0 * (x0[i] - m1[i]);
          x[i] = ratio * x[i] - phi * x0[i] - half_phi * d1;
        }
      } else {  // heun
        const float c = t.alpha * ((torch_sleef::exp(-h) - 1.0f) / h + 1.0f);
        for (size_t i = 0; i < n; ++i) {
          const float d1 = inv_r0 * (x0[i] - m1[i]);
          x[i] = ratio * x[i] - phi * x0[i] + c * d1;
        }
      }
    }
    previous_x0_ = std::move(x0);
    if (lower_order_nums_ < config_.solver_order) ++lower_order_nums_;
  }

 private:
  std::string name_;
  TrainingSchedule schedule_;
  std::vector<float> previous_x0_;
  int lower_order_nums_ = 0;
};

}  // namespace

std::unique_ptr<Sampler> make_dpmpp_2m_sampler(SchedulerConfig config, std::string name) {
  return std::make_unique<DpmppTwoMSampler>(std::move(config), std::move(name));
}

}  // namespace otter::detail

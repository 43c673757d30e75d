// PNDM with skip_prk_steps: the PLMS sampler (pseudo linear multistep, Liu et al. 2022,
// crowsonkb's variant in latent-diffusion), diffusers' PNDMScheduler and SD 1.x's default.
//
// It keeps the last four epsilon predictions and combines them with Adams–Bashforth weights.
// The first step has no history, so it is taken twice: evaluation 0 moves t -> t-Δ with e0,
// evaluation 1 evaluates at t-Δ and redoes the step from the same starting sample with the
// average (e0 + e1)/2 (a Heun step). Hence n+1 UNet evaluations for n steps; the second entry
// of the timesteps repeats.
#include <algorithm>
#include <cmath>
#include <deque>

#include "core/error.h"
#include "sampling/sampler_common.h"

namespace otter::detail {

namespace {

class PndmSampler final : public Sampler {
 public:
  explicit PndmSampler(SchedulerConfig c) : Sampler(std::move(c)), schedule_(make_training_schedule(config_)) {
    reject(!config_.skip_prk_steps, "pndm", "\"skip_prk_steps\": false (PNDM's Runge-Kutta warm-up)");
    reject(config_.prediction_type == PredictionType::Sample, "pndm", "\"prediction_type\": \"sample\"");
    final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0f : schedule_.alphas_cumprod.front();
  }

  std::string name() const override { return "pndm"; }

  void set_timesteps(int n) override {
    check_num_inference_steps(config_, n);
    const int T = config_.num_train_timesteps;
    std::vector<int64_t> base;  // ascending
    switch (config_.timestep_spacing) {
      case TimestepSpacing::Linspace:
        for (double v : numpy_linspace(0, T - 1, n)) base.push_back(static_cast<int64_t>(round_half_even(v)));
        break;
      case TimestepSpacing::Leading:
        for (int64_t i = 0; i < n; ++i) base.push_back(i * (T / n) + config_.steps_offset);
        break;
      case TimestepSpacing::Trailing:
        for (double v : numpy_arange(T, 0, -static_cast<double>(T) / n))
          base.push_back(static_cast<int64_t>(round_half_even(v)) - 1);
        std::reverse(base.begin(), base.end());
        break;
    }
    // [t_0 .. t_{n-2}, t_{n-2}, t_{n-1}] reversed: the second-highest timestep is evaluated twice.
    timesteps_int_.assign(base.begin(), base.end() - 1);
    if (n >= 2) timesteps_int_.push_back(base[base.size() - 2]);
    timesteps_int_.push_back(base.back());
    std::reverse(timesteps_int_.begin(), timesteps_int_.end());
    step_ratio_ = T / n;
    ets_.clear();
    cur_sample_.clear();
    counter_ = 0;
    reset_schedule(to_float(timesteps_int_), {});
  }

 protected:
  void do_add_noise(std::span<const float> original, std::span<const float> noise, int index,
                    std::span<float> out) const override {
    add_noise_alpha(schedule_.alphas_cumprod, timesteps_int_[static_cast<size_t>(index)], original, noise, out);
  }

  void do_step(std::span<const float> e, int index, std::span<float> sample, NoiseGenerator&) override {
    const size_t n = sample.size();
    int64_t t = timesteps_int_[static_cast<size_t>(index)];
    int64_t prev_t = t - step_ratio_;
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.pop_front();
      ets_.emplace_back(e.begin(), e.end());
    } else {
      // The repeated evaluation: redo the first step (from t + Δ) with the averaged prediction.
      prev_t = t;
      t = t + step_ratio_;
    }

    std::vector<float> eps(n);
    std::span<const float> x = sample;
    const size_t k = ets_.size();
    if (k == 1 && counter_ == 0) {
      std::copy(e.begin(), e.end(), eps.begin());
      cur_sample_.assign(sample.begin(), sample.end());
    } else if (k == 1 && counter_ == 1) {
      const std::vector<float>& e0 = ets_.back();
      for (size_t i = 0; i < n; ++i) eps[i] = (e[i] + e0[i]) / 2.0f;
      x = cur_sample_;
    } else if (k == 2) {
      const auto &e1 = ets_[1], &e2 = ets_[0];
      for (size_t i = 0; i < n; ++i) eps[i] = (3.0f * e1[i] - e2[i]) / 2.0f;
    } else if (k == 3) {
      const auto &e1 = ets_[2], &e2 = ets_[1], &e3 = ets_[0];
      for (size_t i = 0; i < n; ++i) eps[i] = (23.0f * e1[i] - 16.0f * e2[i] + 5.0f * e3[i]) / 12.0f;
    } else {
      const auto &e1 = ets_[3], &e2 = ets_[2], &e3 = ets_[1], &e4 = ets_[0];
      const float w = static_cast<float>(1.0 / 24);
      for (size_t i = 0; i < n; ++i) eps[i] = w * (55.0f * e1[i] - 59.0f * e2[i] + 37.0f * e3[i] - 9.0f * e4[i]);
    }

    std::vector<float> prev(n);
    prev_sample(x, t, prev_t, eps, prev);
    if (k == 1 && counter_ == 1) cur_sample_.clear();
    std::copy(prev.begin(), prev.end(), sample.begin());
    ++counter_;
  }

 private:
  // Formula (9) of the PNDM paper: x_{t-δ} from x_t and the combined epsilon.
  void prev_sample(std::span<const float> x, int64_t t, int64_t prev_t, std::vector<float>& eps,
                   std::span<float> out) const {
    const float a_t = schedule_.alphas_cumprod[static_cast<size_t>(t)];
    const float a_prev = prev_t >= 0 ? schedule_.alphas_cumprod[static_cast<size_t>(prev_t)] : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t;
    const float b_prev = 1.0f - a_prev;
    if (config_.prediction_type == PredictionType::VPrediction) {
      const float sa = std::sqrt(a_t), sb = std::sqrt(b_t);
      for (size_t i = 0; i < eps.size(); ++i) eps[i] = sa * eps[i] + sb * x[i];
    }
    const float sample_coeff = std::sqrt(a_prev / a_t);
    const float denom = a_t * std::sqrt(b_prev) + std::sqrt(a_t * b_t * a_prev);
    const float diff = a_prev - a_t;
    for (size_t i = 0; i < out.size(); ++i) out[i] = sample_coeff * x[i] - diff * eps[i] / denom;
  }

  TrainingSchedule schedule_;
  float final_alpha_cumprod_ = 1.0f;
  std::vector<int64_t> timesteps_int_;
  int64_t step_ratio_ = 0;
  std::deque<std::vector<float>> ets_;  // past epsilon predictions, oldest first, at most 4
  std::vector<float> cur_sample_;       // the sample before the first step
  int counter_ = 0;
};

}  // namespace

std::unique_ptr<Sampler> make_pndm_sampler(SchedulerConfig config) {
  return std::make_unique<PndmSampler>(std::move(config));
}

}  // namespace otter::detail

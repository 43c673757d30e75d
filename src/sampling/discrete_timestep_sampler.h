#pragma once
// What DDIM and DDPM share (internal to src/sampling): integer timesteps spaced step_ratio apart
// (ddim_timesteps), and at each step the cumulative alphas of the current timestep and of the one
// it moves to. They differ only in what happens past the first training timestep: DDPM uses 1,
// DDIM its set_alpha_to_one choice.
#include <cstdint>
#include <utility>
#include <vector>

#include "sampling/sampler_common.h"

namespace otter::detail {

class DiscreteTimestepSampler : public Sampler {
 public:
  void set_timesteps(int n) override {
    timesteps_int_ = ddim_timesteps(config_, n);
    step_ratio_ = config_.num_train_timesteps / n;
    reset_schedule(to_float(timesteps_int_), {});
  }

 protected:
  explicit DiscreteTimestepSampler(SchedulerConfig c)
      : Sampler(std::move(c)), schedule_(make_training_schedule(config_)) {}

  void do_add_noise(std::span<const float> original, std::span<const float> noise, int index,
                    std::span<float> out) const override {
    add_noise_alpha(schedule_.alphas_cumprod, timesteps_int_[static_cast<size_t>(index)], original, noise, out);
  }

  struct Alphas {
    int64_t t;      // this step's timestep
    float a_t;      // alphas_cumprod[t]
    float a_prev;   // alphas_cumprod[t - step_ratio], or `final_alpha` before the first one
  };
  Alphas alphas_at(int index, float final_alpha) const {
    const int64_t t = timesteps_int_[static_cast<size_t>(index)];
    const int64_t prev_t = t - step_ratio_;
    return {t, schedule_.alphas_cumprod[static_cast<size_t>(t)],
            prev_t >= 0 ? schedule_.alphas_cumprod[static_cast<size_t>(prev_t)] : final_alpha};
  }

  TrainingSchedule schedule_;

 private:
  std::vector<int64_t> timesteps_int_;
  int64_t step_ratio_ = 0;
};

}  // namespace otter::detail

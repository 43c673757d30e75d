#pragma once
// Pieces shared by the sampler implementations (internal to src/sampling; not public API):
// the per-sampler factories the registry calls, the sigma schedules of the k-diffusion style
// and multistep samplers, and the prediction -> x0 conversion they share.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "sampling/noise_schedule.h"
#include "sampling/sampler.h"

namespace otter::detail {

// One per sampler file. `config` is already resolved for the sampler's diffusers class.
std::unique_ptr<Sampler> make_pndm_sampler(SchedulerConfig config);
std::unique_ptr<Sampler> make_lms_sampler(SchedulerConfig config);
std::unique_ptr<Sampler> make_ddim_sampler(SchedulerConfig config, double eta);
std::unique_ptr<Sampler> make_ddpm_sampler(SchedulerConfig config);
std::unique_ptr<Sampler> make_euler_sampler(SchedulerConfig config);
std::unique_ptr<Sampler> make_euler_ancestral_sampler(SchedulerConfig config);
std::unique_ptr<Sampler> make_heun_sampler(SchedulerConfig config);
std::unique_ptr<Sampler> make_dpmpp_2m_sampler(SchedulerConfig config, std::string name);
std::unique_ptr<Sampler> make_unipc_sampler(SchedulerConfig config);
// LMS's integrated Lagrange coefficient (for tests of the exact integration); `lms` must come
// from make_lms_sampler and have its timesteps set.
double lms_coefficient_for_test(const Sampler& lms, int order, int t, int current);

// Throws "<sampler>: <what> is not supported" naming the config key, for settings otter does
// not implement (rather than silently running something else).
void reject(bool unsupported, std::string_view sampler, std::string_view what);
// Dynamic thresholding is for pixel-space models; no Stable Diffusion config enables it.
void reject_thresholding(const SchedulerConfig& c, std::string_view sampler);

// x0 ("denoised") from the model output at k-diffusion noise level `sigma`, float32:
//   epsilon: x - sigma*e;  v: e * (-sigma/sqrt(sigma^2+1)) + x/(sigma^2+1);  sample: e.
void denoised_from_sigma(PredictionType p, float sigma, std::span<const float> model_output,
                         std::span<const float> x, std::span<float> x0);
// add_noise of the alpha-space samplers at integer timestep t: sqrt(ᾱ_t)·x + sqrt(1−ᾱ_t)·n.
void add_noise_alpha(const std::vector<float>& alphas_cumprod, int64_t t, std::span<const float> original,
                     std::span<const float> noise, std::span<float> out);
// add_noise of DPM-Solver and UniPC at k-diffusion level sigma: α·x + σ_t·n (alpha_sigma_from_sigma).
void add_noise_alpha_sigma(float sigma, std::span<const float> original, std::span<const float> noise,
                           std::span<float> out);
// x / sqrt(sigma^2 + 1): the UNet input of the sigma-space samplers.
void scale_by_sigma(std::span<float> x, float sigma);
// diffusers' init_noise_sigma of the sigma-space samplers: max sigma, or sqrt(max^2 + 1) for
// "leading" spacing (whose first timestep is not the last training timestep).
float sigma_init_noise_sigma(const std::vector<float>& sigmas, TimestepSpacing spacing);

// Timesteps and sigmas (float64, before the float32 cast) of LMS / Euler / Heun: sigmas
// interpolated at the spaced timesteps, or Karras sigmas (from `karras_min`/`karras_max` when
// given, else the ends of the interpolated ones) with their fractional timesteps.
struct SigmaSteps {
  std::vector<double> timesteps;
  std::vector<double> sigmas;  // one per timestep; the final sigma is the caller's
};
SigmaSteps k_sigma_steps(const SchedulerConfig& c, int num_inference_steps, bool float32_linspace,
                         const std::vector<float>& train_sigmas, std::optional<double> karras_min = {},
                         std::optional<double> karras_max = {});

// DPM-Solver / UniPC: integer timesteps and float32 sigmas (n + 1, the last per final_sigmas_type).
struct MultistepSchedule {
  std::vector<int64_t> timesteps;
  std::vector<float> sigmas;
};
MultistepSchedule multistep_schedule(const SchedulerConfig& c, int num_inference_steps, const TrainingSchedule& s,
                                     int64_t last_timestep);

std::vector<float> to_float(const std::vector<double>& v);
std::vector<float> to_float(const std::vector<int64_t>& v);

}  // namespace otter::detail

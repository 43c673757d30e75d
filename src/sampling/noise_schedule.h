#pragma once
// The pieces every sampler is built from: the training noise schedule (betas, alphas_cumprod),
// the spacing of inference timesteps, k-diffusion sigmas and the conversions between them.
//
// Everything is computed with the precision and in the order diffusers 0.30.3 uses, because the
// goldens are diffusers' numbers: torch float32 tensors stay float32 (float here), numpy arrays
// and Python floats are float64 (double here), and the few torch/numpy routines whose rounding
// is their own (torch.linspace, torch.cumprod, numpy.linspace/arange/interp) are reproduced.
#include <cstdint>
#include <vector>

#include "sampling/scheduler_config.h"

namespace otter {

// ---- torch / numpy building blocks -------------------------------------------------------

// torch.linspace(start, end, n, dtype=torch.float32) on the CPU (PyTorch 1.13, AVX2), value for
// value: the first half counted up from start, the second half down from end (see the .cpp).
std::vector<float> torch_linspace_f32(double start, double end, int64_t n);
// numpy.linspace(start, stop, n) in float64 (the last value is exactly `stop`).
std::vector<double> numpy_linspace(double start, double stop, int64_t n);
// numpy.arange(start, stop, step) in float64 (numpy's length and fill rule).
std::vector<double> numpy_arange(double start, double stop, double step);
// numpy.round / Python round(): halves go to the even neighbour.
double round_half_even(double x);
// numpy.interp(x, [0, 1, ..., n-1], fp) in float64.
double numpy_interp(double x, const std::vector<float>& fp);

// ---- training schedule ---------------------------------------------------------------------

struct TrainingSchedule {
  std::vector<float> betas;           // [num_train_timesteps]
  std::vector<float> alphas_cumprod;  // cumulative product of (1 - beta), float32 values
};

// betas from beta_schedule (or trained_betas), rescaled to zero terminal SNR when the config
// asks, then alphas_cumprod. `clamp_final_alpha` sets alphas_cumprod[-1] = 2^-24 under
// rescale_betas_zero_snr, as the sigma-space samplers do so that their first sigma is finite.
TrainingSchedule make_training_schedule(const SchedulerConfig& config, bool clamp_final_alpha = false);

// ---- sigmas ----------------------------------------------------------------------------------

// k-diffusion sigmas sqrt((1 - alphas_cumprod) / alphas_cumprod), float32, indexed by timestep.
std::vector<float> sigmas_from_alphas_cumprod(const std::vector<float>& alphas_cumprod);
// numpy.log of a float32 array.
std::vector<float> log_f32(const std::vector<float>& x);
// Karras et al. (2022) noise levels from sigma_max down to sigma_min (rho = 7), float64.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n);
// diffusers' _sigma_to_t: the fractional timestep whose log-sigma interpolates to log(sigma).
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas);

// The VP-SDE pair behind a k-diffusion sigma: alpha_t = 1/sqrt(sigma^2 + 1), sigma_t = sigma*alpha_t
// (diffusers' _sigma_to_alpha_sigma_t, float32).
struct AlphaSigma {
  float alpha;
  float sigma;
};
AlphaSigma alpha_sigma_from_sigma(float sigma);
// Half log-SNR lambda = log(alpha_t) - log(sigma_t), float32 (+inf at sigma = 0).
float lambda_of(const AlphaSigma& as);

// ---- inference timesteps ---------------------------------------------------------------------

// DDIM / DDPM: integer timesteps, descending.
std::vector<int64_t> ddim_timesteps(const SchedulerConfig& config, int num_inference_steps);
// LMS / Euler / Euler ancestral / Heun: descending, float-valued. `float32_linspace` says whether
// the linspace spacing is computed as float32 (Euler, Euler a, Heun) or float64 (LMS).
std::vector<double> sigma_sampler_timesteps(const SchedulerConfig& config, int num_inference_steps,
                                            bool float32_linspace);
// DPM-Solver / UniPC: n+1 points with the last dropped, integer, descending. `last_timestep` is
// num_train_timesteps unless lambda_min_clipped cuts the schedule short.
std::vector<int64_t> multistep_timesteps(const SchedulerConfig& config, int num_inference_steps,
                                         int64_t last_timestep);

// Throws naming the sampler unless 1 <= num_inference_steps <= num_train_timesteps.
void check_num_inference_steps(const SchedulerConfig& config, int num_inference_steps);

}  // namespace otter

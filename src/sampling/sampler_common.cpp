#include "sampling/sampler_common.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace otter::detail {

void reject(bool unsupported, std::string_view sampler, std::string_view what) {
  if (unsupported) throw Error(cat(sampler, ": ", what, " is not supported by otter"));
}

void reject_thresholding(const SchedulerConfig& c, std::string_view sampler) {
  reject(c.thresholding, sampler, "\"thresholding\": true (dynamic thresholding, meant for pixel-space models)");
}

void denoised_from_sigma(PredictionType p, float sigma, std::span<const float> e, std::span<const float> x,
                         std::span<float> x0) {
  const size_t n = x0.size();
  switch (p) {
    case PredictionType::Epsilon:
      for (size_t i = 0; i < n; ++i) x0[i] = x[i] - sigma * e[i];
      break;
    case PredictionType::VPrediction: {
      // c_out = -sigma / sqrt(sigma^2 + 1), c_skip = 1 / (sigma^2 + 1), each a float32 scalar.
      const float c_out = -sigma / std::sqrt(sigma * sigma + 1.0f);
      const float skip_div = sigma * sigma + 1.0f;
      for (size_t i = 0; i < n; ++i) x0[i] = e[i] * c_out + x[i] / skip_div;
      break;
    }
    case PredictionType::Sample:
      std::copy(e.begin(), e.end(), x0.begin());
      break;
  }
}

void add_noise_alpha(const std::vector<float>& alphas_cumprod, int64_t t, std::span<const float> original,
                     std::span<const float> noise, std::span<float> out) {
  OTTER_CHECK(t >= 0 && static_cast<size_t>(t) < alphas_cumprod.size(), "add_noise: timestep ", t,
              " is outside the training schedule of ", alphas_cumprod.size());
  const float a = alphas_cumprod[static_cast<size_t>(t)];
  // torch: alphas_cumprod[t] ** 0.5 and (1 - alphas_cumprod[t]) ** 0.5 (pow 0.5 is sqrt), each
  // product rounded before the sum.
  const float sqrt_alpha = std::sqrt(a), sqrt_one_minus_alpha = std::sqrt(1.0f - a);
  for (size_t i = 0; i < out.size(); ++i) {
    const float signal = sqrt_alpha * original[i], scaled_noise = sqrt_one_minus_alpha * noise[i];
    out[i] = signal + scaled_noise;
  }
}

void add_noise_alpha_sigma(float sigma, std::span<const float> original, std::span<const float> noise,
                           std::span<float> out) {
  const AlphaSigma as = alpha_sigma_from_sigma(sigma);
  for (size_t i = 0; i < out.size(); ++i) {
    const float signal = as.alpha * original[i], scaled_noise = as.sigma * noise[i];
    out[i] = signal + scaled_noise;
  }
}

void scale_by_sigma(std::span<float> x, float sigma) {
  const float div = std::sqrt(sigma * sigma + 1.0f);
  for (float& v : x) v = v / div;
}

float sigma_init_noise_sigma(const std::vector<float>& sigmas, TimestepSpacing spacing) {
  OTTER_CHECK(!sigmas.empty(), "init_noise_sigma: set_timesteps has not been called");
  const float max_sigma = *std::max_element(sigmas.begin(), sigmas.end());
  if (spacing == TimestepSpacing::Linspace || spacing == TimestepSpacing::Trailing) return max_sigma;
  return std::sqrt(max_sigma * max_sigma + 1.0f);
}

SigmaSteps k_sigma_steps(const SchedulerConfig& c, int n, bool float32_linspace, const std::vector<float>& train_sigmas,
                         std::optional<double> karras_min, std::optional<double> karras_max) {
  SigmaSteps s;
  s.timesteps = sigma_sampler_timesteps(c, n, float32_linspace);
  for (double t : s.timesteps) s.sigmas.push_back(numpy_interp(t, train_sigmas));
  if (c.use_karras_sigmas) {
    const double lo = karras_min.value_or(s.sigmas.back());
    const double hi = karras_max.value_or(s.sigmas.front());
    s.sigmas = karras_sigmas(lo, hi, n);
    const std::vector<float> log_sigmas = log_f32(train_sigmas);
    s.timesteps.clear();
    for (double sigma : s.sigmas) s.timesteps.push_back(sigma_to_t(sigma, log_sigmas));
  }
  return s;
}

MultistepSchedule multistep_schedule(const SchedulerConfig& c, int n, const TrainingSchedule& s,
                                     int64_t last_timestep) {
  MultistepSchedule m;
  m.timesteps = multistep_timesteps(c, n, last_timestep);
  const std::vector<float> train_sigmas = sigmas_from_alphas_cumprod(s.alphas_cumprod);
  std::vector<double> sigmas;
  if (c.use_karras_sigmas) {
    // From the whole training range (flipped: sigma_max first), timesteps rounded to integers.
    sigmas = karras_sigmas(train_sigmas.front(), train_sigmas.back(), n);
    const std::vector<float> log_sigmas = log_f32(train_sigmas);
    m.timesteps.clear();
    for (double sigma : sigmas) m.timesteps.push_back(static_cast<int64_t>(round_half_even(sigma_to_t(sigma, log_sigmas))));
  } else {
    for (int64_t t : m.timesteps) sigmas.push_back(numpy_interp(static_cast<double>(t), train_sigmas));
  }
  m.sigmas = to_float(sigmas);
  if (c.final_sigmas_type == "zero") {
    m.sigmas.push_back(0.0f);
  } else if (c.final_sigmas_type == "sigma_min") {
    m.sigmas.push_back(train_sigmas.front());
  } else {
    throw Error(cat(c.class_name, ": final_sigmas_type '", c.final_sigmas_type, "' is not one of zero, sigma_min"));
  }
  return m;
}

std::vector<float> to_float(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

std::vector<float> to_float(const std::vector<int64_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

}  // namespace otter::detail

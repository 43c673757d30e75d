#include "sampling/noise_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "sampling/torch_sleef_math.h"

namespace otter {

// ---- torch / numpy building blocks -------------------------------------------------------

std::vector<float> torch_linspace_f32(double start_d, double end_d, int64_t n) {
  // PyTorch's (1.13) CPU linspace kernel for float: start and end rounded to float, the step in
  // double; element i is start + step*i in the first half and end - step*(n-1-i) in the second
  // (so both ends are exact). The kernel writes 8 floats at a time (AVX2 Vectorized<float>::
  // arange): the block's first value is rounded to float, the others are that float + k*step in
  // double, rounded; the tail past the last pair of blocks is scalar. This reproduces every
  // alphas_cumprod value the goldens reveal bit for bit (a float step, or a plain element-wise
  // formula, is off by 1-3 ulps in alphas_cumprod from t ~ 350 on).
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  if (n <= 0) return out;
  const double start = static_cast<float>(start_d);
  const double end = static_cast<float>(end_d);
  if (n == 1) {
    out[0] = static_cast<float>(start);
    return out;
  }
  const double step = (end - start) / static_cast<double>(n - 1);
  const int64_t halfway = n / 2;
  auto scalar = [&](int64_t idx) -> double {
    return idx < halfway ? start + step * static_cast<double>(idx) : end - step * static_cast<double>(n - idx - 1);
  };
  constexpr int64_t kVec = 8;
  int64_t i = 0;
  for (; i + 2 * kVec <= n; i += 2 * kVec) {
    for (int64_t block = i; block < i + 2 * kVec; block += kVec) {
      const float base = static_cast<float>(scalar(block));
      for (int64_t k = 0; k < kVec; ++k)
        out[static_cast<size_t>(block + k)] = static_cast<float>(static_cast<double>(base) + static_cast<double>(k) * step);
    }
  }
  for (; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<float>(scalar(i));
  return out;
}

std::vector<double> numpy_linspace(double start, double stop, int64_t n) {
  std::vector<double> y(static_cast<size_t>(std::max<int64_t>(n, 0)));
  if (n <= 0) return y;
  const int64_t div = n - 1;
  const double delta = stop - start;
  const double step = div > 0 ? delta / static_cast<double>(div) : 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double v = static_cast<double>(i);
    if (div > 0 && step == 0.0) v = v / static_cast<double>(div) * delta;
    else if (div > 0) v = v * step;
    else v = v * delta;
    y[static_cast<size_t>(i)] = v + start;
  }
  if (n > 1) y.back() = stop;
  return y;
}

std::vector<double> numpy_arange(double start, double stop, double step) {
  OTTER_CHECK(step != 0.0, "arange: step must not be zero");
  const double len_d = std::ceil((stop - start) / step);
  if (!(len_d > 0)) return {};
  const auto len = static_cast<size_t>(len_d);
  std::vector<double> out(len);
  out[0] = start;
  if (len > 1) out[1] = start + step;
  // numpy fills from the first two values: delta = out[1] - out[0], out[i] = start + i*delta.
  const double delta = len > 1 ? out[1] - start : step;
  for (size_t i = 2; i < len; ++i) out[i] = start + static_cast<double>(i) * delta;
  return out;
}

double round_half_even(double x) { return std::nearbyint(x); }

double numpy_interp(double x, const std::vector<float>& fp) {
  OTTER_CHECK(!fp.empty(), "interp: empty table");
  const auto last = static_cast<int64_t>(fp.size()) - 1;
  if (std::isnan(x)) return x;
  if (x < 0) return fp.front();
  if (x >= static_cast<double>(last)) return fp.back();
  const auto j = static_cast<int64_t>(std::floor(x));
  const double yj = fp[static_cast<size_t>(j)];
  if (static_cast<double>(j) == x) return yj;
  const double yk = fp[static_cast<size_t>(j + 1)];
  const double slope = (yk - yj) / 1.0;  // xp[j+1] - xp[j] = 1
  double r = slope * (x - static_cast<double>(j)) + yj;
  if (std::isnan(r)) r = slope * (x - static_cast<double>(j + 1)) + yk;
  return r;
}

// ---- training schedule ---------------------------------------------------------------------

namespace {

// diffusers' betas_for_alpha_bar with the cosine ("squaredcos_cap_v2") alpha_bar, in Python
// floats, then torch.tensor(..., float32).
std::vector<float> cosine_betas(int n) {
  auto alpha_bar = [](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2);
    return c * c;
  };
  std::vector<float> betas(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / n;
    const double t2 = static_cast<double>(i + 1) / n;
    betas[static_cast<size_t>(i)] = static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return betas;
}

// torch.cumprod on a float32 CPU tensor: the running product is kept in double (PyTorch's CPU
// accumulate type for float) and each output rounded to float.
std::vector<float> cumprod_f32(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  double acc = 1.0;
  for (size_t i = 0; i < x.size(); ++i) {
    acc *= static_cast<double>(x[i]);
    out[i] = static_cast<float>(acc);
  }
  return out;
}

std::vector<float> one_minus(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = 1.0f - x[i];
  return out;
}

// Lin et al. (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1:
// shift and scale sqrt(alphas_cumprod) so the last timestep has zero SNR. float32 as in diffusers.
std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas) {
  std::vector<float> s = cumprod_f32(one_minus(betas));
  for (float& v : s) v = std::sqrt(v);
  const float s0 = s.front();
  const float sT = s.back();
  for (float& v : s) v -= sT;
  const float scale = s0 / (s0 - sT);
  for (float& v : s) v *= scale;
  std::vector<float> alphas_bar(s.size());
  for (size_t i = 0; i < s.size(); ++i) alphas_bar[i] = s[i] * s[i];
  std::vector<float> out(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const float alpha = i == 0 ? alphas_bar[0] : alphas_bar[i] / alphas_bar[i - 1];
    out[i] = 1.0f - alpha;
  }
  return out;
}

}  // namespace

TrainingSchedule make_training_schedule(const SchedulerConfig& c, bool clamp_final_alpha) {
  TrainingSchedule s;
  const int n = c.num_train_timesteps;
  if (!c.trained_betas.empty()) {
    s.betas.assign(c.trained_betas.begin(), c.trained_betas.end());
  } else {
    switch (c.beta_schedule) {
      case BetaSchedule::Linear:
        s.betas = torch_linspace_f32(c.beta_start, c.beta_end, n);
        break;
      case BetaSchedule::ScaledLinear:
        // Linear in sqrt(beta), then squared in float32 ("very specific to latent diffusion").
        s.betas = torch_linspace_f32(std::sqrt(c.beta_start), std::sqrt(c.beta_end), n);
        for (float& b : s.betas) b = b * b;
        break;
      case BetaSchedule::SquaredCosCapV2:
        s.betas = cosine_betas(n);
        break;
    }
  }
  if (c.rescale_betas_zero_snr) s.betas = rescale_zero_terminal_snr(s.betas);
  s.alphas_cumprod = cumprod_f32(one_minus(s.betas));
  // Zero terminal SNR makes alphas_cumprod[-1] exactly 0; samplers working with sigma set it
  // to "nearly zero" instead so sigma_max stays finite.
  if (c.rescale_betas_zero_snr && clamp_final_alpha) s.alphas_cumprod.back() = std::ldexp(1.0f, -24);
  return s;
}

// ---- sigmas ----------------------------------------------------------------------------------

std::vector<float> sigmas_from_alphas_cumprod(const std::vector<float>& ac) {
  std::vector<float> out(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) out[i] = std::sqrt((1.0f - ac[i]) / ac[i]);
  return out;
}

std::vector<float> log_f32(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = std::log(x[i]);
  return out;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n) {
  constexpr double rho = 7.0;
  const std::vector<double> ramp = numpy_linspace(0, 1, n);
  const double min_inv_rho = std::pow(sigma_min, 1 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1 / rho);
  std::vector<double> out(ramp.size());
  for (size_t i = 0; i < ramp.size(); ++i) out[i] = std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
  return out;
}

double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  OTTER_CHECK(log_sigmas.size() >= 2, "sigma_to_t: need at least two log-sigmas");
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // low_idx: the last index whose log-sigma is <= log(sigma) (0 if none), clipped so that
  // high_idx = low_idx + 1 stays in range.
  size_t low_idx = 0;
  size_t count = 0, best = 0;
  for (size_t i = 0; i < log_sigmas.size(); ++i) {
    if (log_sigma - static_cast<double>(log_sigmas[i]) >= 0) ++count;
    if (count > best) {
      best = count;
      low_idx = i;
    }
  }
  low_idx = std::min(low_idx, log_sigmas.size() - 2);
  const size_t high_idx = low_idx + 1;
  const float low = log_sigmas[low_idx];
  const float high = log_sigmas[high_idx];
  // numpy: float32 - float64 is float64, but float32 - float32 stays float32.
  double w = (static_cast<double>(low) - log_sigma) / static_cast<double>(low - high);
  w = std::clamp(w, 0.0, 1.0);
  return (1 - w) * static_cast<double>(low_idx) + w * static_cast<double>(high_idx);
}

AlphaSigma alpha_sigma_from_sigma(float sigma) {
  const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
  return {alpha, sigma * alpha};
}

float lambda_of(const AlphaSigma& as) { return torch_sleef::log(as.alpha) - torch_sleef::log(as.sigma); }

// ---- inference timesteps ---------------------------------------------------------------------

void check_num_inference_steps(const SchedulerConfig& c, int n) {
  OTTER_CHECK(n >= 1 && n <= c.num_train_timesteps, c.class_name, ": num_inference_steps must be between 1 and ",
              "num_train_timesteps (", c.num_train_timesteps, "), got ", n);
}

std::vector<int64_t> ddim_timesteps(const SchedulerConfig& c, int n) {
  check_num_inference_steps(c, n);
  const int T = c.num_train_timesteps;
  std::vector<int64_t> out;
  switch (c.timestep_spacing) {
    case TimestepSpacing::Linspace:
      for (double v : numpy_linspace(0, T - 1, n)) out.push_back(static_cast<int64_t>(round_half_even(v)));
      std::reverse(out.begin(), out.end());
      break;
    case TimestepSpacing::Leading: {
      const int64_t ratio = T / n;
      for (int64_t i = n - 1; i >= 0; --i) out.push_back(i * ratio + c.steps_offset);
      break;
    }
    case TimestepSpacing::Trailing:
      for (double v : numpy_arange(T, 0, -static_cast<double>(T) / n))
        out.push_back(static_cast<int64_t>(round_half_even(v)) - 1);
      break;
  }
  return out;
}

std::vector<double> sigma_sampler_timesteps(const SchedulerConfig& c, int n, bool float32_linspace) {
  check_num_inference_steps(c, n);
  const int T = c.num_train_timesteps;
  std::vector<double> out;
  switch (c.timestep_spacing) {
    case TimestepSpacing::Linspace:
      for (double v : numpy_linspace(0, T - 1, n)) out.push_back(float32_linspace ? static_cast<float>(v) : v);
      std::reverse(out.begin(), out.end());
      break;
    case TimestepSpacing::Leading: {
      const int64_t ratio = T / n;
      for (int64_t i = n - 1; i >= 0; --i) {
        const auto v = static_cast<double>(i * ratio);
        // float32 array += steps_offset stays float32 (exact for integers below 2^24).
        out.push_back(float32_linspace ? static_cast<float>(v) + static_cast<float>(c.steps_offset)
                                       : v + c.steps_offset);
      }
      break;
    }
    case TimestepSpacing::Trailing:
      for (double v : numpy_arange(T, 0, -static_cast<double>(T) / n)) {
        const double r = round_half_even(v);
        out.push_back(float32_linspace ? static_cast<float>(r) - 1.0f : r - 1.0);
      }
      break;
  }
  return out;
}

std::vector<int64_t> multistep_timesteps(const SchedulerConfig& c, int n, int64_t last_timestep) {
  check_num_inference_steps(c, n);
  std::vector<int64_t> out;
  switch (c.timestep_spacing) {
    case TimestepSpacing::Linspace: {
      const std::vector<double> v = numpy_linspace(0, static_cast<double>(last_timestep - 1), n + 1);
      for (int i = n; i >= 1; --i) out.push_back(static_cast<int64_t>(round_half_even(v[static_cast<size_t>(i)])));
      break;
    }
    case TimestepSpacing::Leading: {
      const int64_t ratio = last_timestep / (n + 1);
      for (int64_t i = n; i >= 1; --i) out.push_back(i * ratio + c.steps_offset);
      break;
    }
    case TimestepSpacing::Trailing:
      for (double v : numpy_arange(static_cast<double>(last_timestep), 0, -static_cast<double>(c.num_train_timesteps) / n))
        out.push_back(static_cast<int64_t>(round_half_even(v)) - 1);
      break;
  }
  return out;
}

}  // namespace otter

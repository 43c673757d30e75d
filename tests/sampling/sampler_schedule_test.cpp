// The schedule building blocks: timestep spacings (values diffusers 0.30.3 produces), numpy and
// torch reproductions, PyTorch's SLEEF exp/log/expm1, and LMS's exact coefficient integration.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <random>

#include "sampling/noise_schedule.h"
#include "sampling/sampler.h"
#include "sampling/sampler_common.h"
#include "sampling/torch_sleef_math.h"

namespace otter {
namespace {

SchedulerConfig sd1_for(std::string_view cls, TimestepSpacing spacing) {
  SchedulerConfig c = SchedulerConfig::sd1_default().for_class(cls);
  c.timestep_spacing = spacing;
  return c;
}

std::vector<double> as_double(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

TEST(TimestepSpacing, DdimStyle) {
  const std::vector<double> leading = as_double(ddim_timesteps(sd1_for("DDIMScheduler", TimestepSpacing::Leading), 10));
  EXPECT_EQ(leading, (std::vector<double>{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}));
  const auto leading50 = ddim_timesteps(sd1_for("DDIMScheduler", TimestepSpacing::Leading), 50);
  EXPECT_EQ(leading50.front(), 981);
  EXPECT_EQ(leading50.back(), 1);
  EXPECT_EQ(as_double(ddim_timesteps(sd1_for("DDIMScheduler", TimestepSpacing::Trailing), 10)),
            (std::vector<double>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
  EXPECT_EQ(as_double(ddim_timesteps(sd1_for("DDIMScheduler", TimestepSpacing::Linspace), 10)),
            (std::vector<double>{999, 888, 777, 666, 555, 444, 333, 222, 111, 0}));
  // 1000/7 is not an integer: numpy's arange and round-half-even decide the values.
  EXPECT_EQ(as_double(ddim_timesteps(sd1_for("DDIMScheduler", TimestepSpacing::Trailing), 7)),
            (std::vector<double>{999, 856, 713, 570, 428, 285, 142}));
}

TEST(TimestepSpacing, SigmaSamplers) {
  EXPECT_EQ(sigma_sampler_timesteps(sd1_for("EulerDiscreteScheduler", TimestepSpacing::Leading), 10, true),
            (std::vector<double>{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}));
  EXPECT_EQ(sigma_sampler_timesteps(sd1_for("EulerDiscreteScheduler", TimestepSpacing::Trailing), 10, true),
            (std::vector<double>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
  // linspace(0, 999, 7): fractional steps of 166.5; float32 vs float64 only differ for other n.
  EXPECT_EQ(sigma_sampler_timesteps(sd1_for("EulerDiscreteScheduler", TimestepSpacing::Linspace), 7, true),
            (std::vector<double>{999, 832.5, 666, 499.5, 333, 166.5, 0}));
  const auto f32 = sigma_sampler_timesteps(sd1_for("EulerDiscreteScheduler", TimestepSpacing::Linspace), 11, true);
  const auto f64 = sigma_sampler_timesteps(sd1_for("LMSDiscreteScheduler", TimestepSpacing::Linspace), 11, false);
  EXPECT_EQ(f64[1], 9 * (999.0 / 10));  // numpy: i * step
  EXPECT_EQ(f32[1], static_cast<double>(static_cast<float>(9 * (999.0 / 10))));
  EXPECT_NE(f32[1], f64[1]);
}

TEST(TimestepSpacing, Multistep) {
  const auto cfg = [](TimestepSpacing s) { return sd1_for("DPMSolverMultistepScheduler", s); };
  EXPECT_EQ(as_double(multistep_timesteps(cfg(TimestepSpacing::Linspace), 10, 1000)),
            (std::vector<double>{999, 899, 799, 699, 599, 500, 400, 300, 200, 100}));
  EXPECT_EQ(as_double(multistep_timesteps(cfg(TimestepSpacing::Leading), 10, 1000)),
            (std::vector<double>{901, 811, 721, 631, 541, 451, 361, 271, 181, 91}));
  EXPECT_EQ(as_double(multistep_timesteps(cfg(TimestepSpacing::Trailing), 10, 1000)),
            (std::vector<double>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
}

TEST(TimestepSpacing, EvaluationCounts) {
  const SchedulerConfig sd1 = SchedulerConfig::sd1_default();
  for (std::string_view name : sampler_names()) {
    const auto s = make_sampler(name, sd1);
    for (int n : {1, 2, 7, 25}) {
      s->set_timesteps(n);
      const int want = name == "heun" ? 2 * n - 1 : name == "pndm" && n > 1 ? n + 1 : n;
      EXPECT_EQ(s->num_evaluations(), want) << name << " n=" << n;
      if (!s->sigmas().empty()) {
        EXPECT_EQ(static_cast<int>(s->sigmas().size()), want + 1) << name;
        EXPECT_EQ(s->sigmas().back(), 0.0f) << name;
      }
    }
  }
}

TEST(NumpyTorch, LinspaceAndArange) {
  EXPECT_EQ(numpy_linspace(0, 1, 5), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(numpy_linspace(3, 7, 1), (std::vector<double>{3}));
  EXPECT_EQ(numpy_arange(10, 0, -2.5), (std::vector<double>{10, 7.5, 5, 2.5}));
  EXPECT_TRUE(numpy_arange(0, 10, -1).empty());
  EXPECT_EQ(round_half_even(2.5), 2);
  EXPECT_EQ(round_half_even(3.5), 4);
  EXPECT_EQ(round_half_even(-0.5), 0);

  const std::vector<float> lin = torch_linspace_f32(std::sqrt(0.00085), std::sqrt(0.012), 1000);
  ASSERT_EQ(lin.size(), 1000u);
  EXPECT_EQ(lin.front(), static_cast<float>(std::sqrt(0.00085)));
  EXPECT_EQ(lin.back(), static_cast<float>(std::sqrt(0.012)));
  for (size_t i = 1; i < lin.size(); ++i) ASSERT_GT(lin[i], lin[i - 1]) << i;
  EXPECT_EQ(torch_linspace_f32(1, 5, 3), (std::vector<float>{1, 3, 5}));

  const std::vector<float> fp = {10, 20, 40};
  EXPECT_EQ(numpy_interp(0.5, fp), 15);
  EXPECT_EQ(numpy_interp(1.25, fp), 25);
  EXPECT_EQ(numpy_interp(2, fp), 40);
  EXPECT_EQ(numpy_interp(-1, fp), 10);
  EXPECT_EQ(numpy_interp(7, fp), 40);
}

TEST(NoiseSchedule, AlphasCumprodProperties) {
  const TrainingSchedule s = make_training_schedule(SchedulerConfig::sd1_default());
  ASSERT_EQ(s.alphas_cumprod.size(), 1000u);
  EXPECT_NEAR(s.alphas_cumprod[0], 1 - 0.00085, 1e-7);
  for (size_t i = 1; i < 1000; ++i) ASSERT_LT(s.alphas_cumprod[i], s.alphas_cumprod[i - 1]);
  // Stable Diffusion's well-known sigma_max and sigma_min.
  const std::vector<float> sigmas = sigmas_from_alphas_cumprod(s.alphas_cumprod);
  EXPECT_NEAR(sigmas.back(), 14.6146, 1e-4);
  EXPECT_NEAR(sigmas.front(), 0.0292, 1e-4);

  // Zero terminal SNR: the last alphas_cumprod is 0 (2^-24 for samplers that need sigma_max).
  SchedulerConfig z = SchedulerConfig::sd1_default().for_class("DDIMScheduler");
  z.rescale_betas_zero_snr = true;
  EXPECT_EQ(make_training_schedule(z).alphas_cumprod.back(), 0.0f);
  EXPECT_EQ(make_training_schedule(z, true).alphas_cumprod.back(), std::ldexp(1.0f, -24));
  EXPECT_NEAR(make_training_schedule(z).alphas_cumprod[0], s.alphas_cumprod[0], 1e-6);

  SchedulerConfig cosine = SchedulerConfig::from_json({{"beta_schedule", "squaredcos_cap_v2"}}, "DDPMScheduler");
  const TrainingSchedule c = make_training_schedule(cosine);
  EXPECT_NEAR(c.betas.back(), 0.999, 1e-7);  // capped
  EXPECT_GT(c.alphas_cumprod[0], 0.9999);
}

TEST(NoiseSchedule, KarrasAndSigmaToT) {
  const std::vector<double> k = karras_sigmas(0.03, 14.6, 10);
  EXPECT_NEAR(k.front(), 14.6, 1e-12);
  EXPECT_NEAR(k.back(), 0.03, 1e-12);
  const std::vector<float> train = sigmas_from_alphas_cumprod(make_training_schedule(SchedulerConfig::sd1_default()).alphas_cumprod);
  const std::vector<float> logs = log_f32(train);
  EXPECT_NEAR(sigma_to_t(train[500], logs), 500, 1e-3);
  EXPECT_NEAR(sigma_to_t(train[999], logs), 999, 1e-3);
  EXPECT_NEAR(sigma_to_t(std::sqrt(static_cast<double>(train[10]) * train[11]), logs), 10.5, 0.01);
  EXPECT_EQ(sigma_to_t(1e-6, logs), 0);  // below the table: clipped
}

// A float one ulp away from x.
float next_up(float x) { return std::nextafter(x, std::numeric_limits<float>::infinity()); }
double ulps_between(float a, double exact) {
  const float e = static_cast<float>(exact);
  return std::abs(static_cast<double>(a) - exact) / (static_cast<double>(next_up(std::abs(e))) - std::abs(e));
}

TEST(TorchSleefMath, WithinOneUlpOfExact) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> exp_arg(-20.0f, 20.0f), log_arg(-30.0f, 30.0f);
  double worst_exp = 0, worst_log = 0, worst_expm1 = 0;
  for (int i = 0; i < 200000; ++i) {
    const float a = exp_arg(gen);
    worst_exp = std::max(worst_exp, ulps_between(torch_sleef::exp(a), std::exp(static_cast<double>(a))));
    worst_expm1 = std::max(worst_expm1, ulps_between(torch_sleef::expm1(a), std::expm1(static_cast<double>(a))));
    const float b = std::exp(log_arg(gen));
    worst_log = std::max(worst_log, ulps_between(torch_sleef::log(b), std::log(static_cast<double>(b))));
  }
  EXPECT_LT(worst_exp, 1.0);
  EXPECT_LT(worst_log, 1.0);
  EXPECT_LT(worst_expm1, 1.0);
  EXPECT_EQ(torch_sleef::log(1.0f), 0.0f);
  EXPECT_EQ(torch_sleef::exp(0.0f), 1.0f);
  EXPECT_EQ(torch_sleef::log(0.0f), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(torch_sleef::exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(torch_sleef::expm1(-std::numeric_limits<float>::infinity()), -1.0f);
  EXPECT_TRUE(std::isnan(torch_sleef::log(-1.0f)));
  // The value behind DPM-Solver++'s first step in the tiny-sd1 golden: PyTorch's exp is one ulp
  // above the correctly rounded result here, and diffusers' latents follow it.
  EXPECT_EQ(torch_sleef::exp(-0.5654306411743164f), next_up(static_cast<float>(std::exp(-0.5654306411743164))));
}

// LMS integrates Lagrange basis polynomials over [sigma_t, sigma_{t+1}]; check against closed forms.
TEST(LmsCoefficients, ExactIntegration) {
  const auto lms = make_sampler("lms", SchedulerConfig::sd1_default());
  lms->set_timesteps(10);
  const std::vector<double> s(lms->sigmas().begin(), lms->sigmas().end());
  double worst = 0;
  for (int t = 0; t < 10; ++t) {
    const int max_order = std::min(t + 1, 4);
    for (int order = 1; order <= max_order; ++order) {
      // The basis polynomials sum to 1, so the coefficients sum to the interval length.
      double sum = 0;
      for (int j = 0; j < order; ++j) sum += detail::lms_coefficient_for_test(*lms, order, t, j);
      worst = std::max(worst, std::abs(sum - (s[t + 1] - s[t])) / std::abs(s[t + 1] - s[t]));
    }
    EXPECT_NEAR(detail::lms_coefficient_for_test(*lms, 1, t, 0), s[t + 1] - s[t], 1e-13);
    if (t >= 1) {
      // Order 2, node j=0: integral of (tau - s1)/(s0 - s1) = [(tau - s1)^2 / 2] / (s0 - s1).
      const double s0 = s[t], s1 = s[t - 1], a = s[t], b = s[t + 1];
      const double want = ((b - s1) * (b - s1) - (a - s1) * (a - s1)) / 2 / (s0 - s1);
      EXPECT_NEAR(detail::lms_coefficient_for_test(*lms, 2, t, 0), want, 1e-12 * std::abs(want));
    }
  }
  EXPECT_LT(worst, 1e-12);
  std::cout << "[lms] max relative error of the coefficient sums: " << worst << "\n";
}

}  // namespace
}  // namespace otter

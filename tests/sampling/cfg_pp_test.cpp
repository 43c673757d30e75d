// CFG++ (Chung et al. 2024) in the euler and ddim samplers against the paper's update written here
// in double: Euler  x' = x0(e_g) + σ_next·(x − x0(e_u))/σ  (x0(e) = x − σ·e),
//            DDIM   x' = sqrt(ᾱ_prev)·(x − sqrt(1 − ᾱ)·e_g)/sqrt(ᾱ) + sqrt(1 − ᾱ_prev)·e_u;
// with e_u = e_g it is the sampler's ordinary step; samplers without the form refuse it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "guidance/guidance_recipe.h"
#include "guidance/guider_prediction.h"
#include "sampling/noise_schedule.h"
#include "sampling/sampler.h"
#include "support/compare.h"

namespace otter {
namespace {

using testing::random_normal_tensor;

class ZeroNoise : public NoiseGenerator {
 public:
  void randn(float* out, size_t n) override {
    for (size_t i = 0; i < n; ++i) out[i] = 0.0f;
  }
};

TEST(CfgPlusPlus, EulerAndDdimFollowThePapersUpdate) {
  const SchedulerConfig config = SchedulerConfig::sd1_default();
  const std::vector<float> alphas = make_training_schedule(config).alphas_cumprod;
  for (const char* name : {"euler", "ddim"}) {
    auto s = make_sampler(name, config);
    ASSERT_TRUE(s->supports_cfg_pp()) << name;
    s->set_timesteps(8);
    ZeroNoise noise;
    Tensor x = random_normal_tensor(Shape{2, 4, 4, 4}, 1);
    for (int k = 0; k < s->num_evaluations(); ++k) {
      const Tensor eg = random_normal_tensor(x.shape(), 10 + k), eu = random_normal_tensor(x.shape(), 50 + k);
      Tensor want = Tensor::empty(x.shape(), DType::F32);
      for (int64_t i = 0; i < x.numel(); ++i) {
        const double xi = x.f32()[i], g = eg.f32()[i], u = eu.f32()[i];
        double out;
        if (std::string(name) == "euler") {
          const double sigma = s->sigmas()[static_cast<size_t>(k)], next = s->sigmas()[static_cast<size_t>(k) + 1];
          out = (xi - sigma * g) + next * (xi - (xi - sigma * u)) / sigma;
        } else {
          const int t = static_cast<int>(s->timesteps()[static_cast<size_t>(k)]);
          const int prev = t - 1000 / 8;
          const double a = alphas[static_cast<size_t>(t)];
          const double ap = prev >= 0 ? alphas[static_cast<size_t>(prev)] : alphas[0];  // set_alpha_to_one false
          out = std::sqrt(ap) * (xi - std::sqrt(1 - a) * g) / std::sqrt(a) + std::sqrt(1 - ap) * u;
        }
        want.f32()[i] = static_cast<float>(out);
      }
      s->step_cfg_pp(eg, eu, k, x, noise);
      EXPECT_LE(testing::max_abs_diff(x, want), 2e-5 * std::max(1.0, testing::max_abs(want))) << name << " step " << k;
      x = want;  // the next step starts from the reference
    }
  }
}

TEST(CfgPlusPlus, EqualPredictionsGiveTheOrdinaryStep) {
  const SchedulerConfig config = SchedulerConfig::sd1_default();
  for (const char* name : {"euler", "ddim"}) {
    auto a = make_sampler(name, config), b = make_sampler(name, config);
    a->set_timesteps(5), b->set_timesteps(5);
    ZeroNoise noise;
    Tensor xa = random_normal_tensor(Shape{1, 4, 4, 4}, 2), xb = xa.clone();
    for (int k = 0; k < a->num_evaluations(); ++k) {
      const Tensor e = random_normal_tensor(xa.shape(), 20 + k);
      a->step(e, k, xa, noise);
      b->step_cfg_pp(e, e, k, xb, noise);
      EXPECT_LE(testing::max_abs_diff(xa, xb), 1e-5 * testing::max_abs(xa)) << name << " step " << k;
    }
  }
}

TEST(CfgPlusPlus, OtherSamplersRefuseIt) {
  for (const char* name : {"lms", "ddpm", "euler_a", "heun", "dpmpp_2m", "unipc"}) {
    auto s = make_sampler(name, SchedulerConfig::sd1_default());
    EXPECT_FALSE(s->supports_cfg_pp()) << name;
    s->set_timesteps(4);
    ZeroNoise noise;
    Tensor x = random_normal_tensor(Shape{1, 4, 4, 4}, 3);
    try {
      s->step_cfg_pp(x, x, 0, x, noise);
      ADD_FAILURE() << name << " accepted CFG++";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("euler or ddim"), std::string::npos) << e.what();
    }
  }
}

// The guider hands the sampler the uncond rows to renoise with, and the guided ones to denoise.
TEST(CfgPlusPlus, GuiderRenoisesWithTheUncondRows) {
  const int64_t B = 2;
  const Tensor uncond = random_normal_tensor(Shape{B, 77, 8}, 4), cond = random_normal_tensor(Shape{B, 77, 8}, 5);
  GuiderPrediction guidance(uncond, cond, GuidanceRecipe::parse("cfg_pp:scale=0.6,stop=0.5").make(), CfgBatching::Batched);
  const Denoiser model = [&](const Tensor& x, float, const Tensor& context, const RowPerturbation*) {
    Tensor out = x.contiguous().clone();
    const int64_t per = out.numel() / out.dim(0), ctx = context.numel() / context.dim(0);
    for (int64_t b = 0; b < out.dim(0); ++b)
      for (int64_t i = 0; i < per; ++i) out.f32()[b * per + i] += context.f32()[b * ctx];
    return out;
  };
  const Tensor x = random_normal_tensor(Shape{B, 4, 2, 2}, 6);
  for (int s = 0; s < 4; ++s) {
    const Tensor pred = guidance.predict(model, x, 900.0f, s, 4);
    const Tensor renoise = guidance.renoise_prediction();
    const int64_t per = x.numel() / B;
    if (s >= 2) {  // outside stop=0.5: an ordinary conditional step
      EXPECT_FALSE(renoise.defined());
      continue;
    }
    ASSERT_TRUE(renoise.defined());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < per; ++i) {
        const float u = x.f32()[b * per + i] + uncond.f32()[b * 77 * 8];
        const float c = x.f32()[b * per + i] + cond.f32()[b * 77 * 8];
        EXPECT_EQ(renoise.f32()[b * per + i], u);
        EXPECT_EQ(pred.f32()[b * per + i], u + 0.6f * (c - u));
      }
  }
}

}  // namespace
}  // namespace otter

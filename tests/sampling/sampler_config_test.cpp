// SchedulerConfig (diffusers' per-class defaults, keys carried over from a model's file) and the
// sampler registry (names, name-implied settings, rejected options).
#include <gtest/gtest.h>

#include "core/error.h"
#include "sampling/sampler.h"
#include "sampling/scheduler_config.h"
#include "support/shared_data.h"

namespace otter {
namespace {

using nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SchedulerConfig, ClassDefaultsWhenKeysAreAbsent) {
  const SchedulerConfig empty = SchedulerConfig::from_json(json::object(), "PNDMScheduler");
  EXPECT_EQ(empty.timestep_spacing, TimestepSpacing::Leading);
  EXPECT_FALSE(empty.set_alpha_to_one);
  EXPECT_FALSE(empty.skip_prk_steps);
  EXPECT_EQ(empty.beta_schedule, BetaSchedule::Linear);
  EXPECT_EQ(empty.beta_start, 0.0001);
  EXPECT_EQ(empty.steps_offset, 0);

  const SchedulerConfig ddim = empty.for_class("DDIMScheduler");
  EXPECT_TRUE(ddim.set_alpha_to_one);  // unlike PNDM
  EXPECT_TRUE(ddim.clip_sample);
  EXPECT_EQ(ddim.timestep_spacing, TimestepSpacing::Leading);

  const SchedulerConfig euler = empty.for_class("EulerDiscreteScheduler");
  EXPECT_EQ(euler.timestep_spacing, TimestepSpacing::Linspace);
  EXPECT_EQ(euler.final_sigmas_type, "zero");
  EXPECT_FALSE(euler.sigma_min.has_value());

  const SchedulerConfig heun = empty.for_class("HeunDiscreteScheduler");
  EXPECT_EQ(heun.beta_start, 0.00085);  // Heun's defaults are SD's range
  EXPECT_EQ(heun.beta_end, 0.012);

  const SchedulerConfig dpm = empty.for_class("DPMSolverMultistepScheduler");
  EXPECT_EQ(dpm.algorithm_type, "dpmsolver++");
  EXPECT_EQ(dpm.solver_order, 2);
  EXPECT_TRUE(dpm.lower_order_final);
  EXPECT_TRUE(std::isinf(dpm.lambda_min_clipped) && dpm.lambda_min_clipped < 0);
  EXPECT_TRUE(dpm.variance_type.empty());

  const SchedulerConfig unipc = empty.for_class("UniPCMultistepScheduler");
  EXPECT_EQ(unipc.solver_type, "bh2");
  EXPECT_TRUE(unipc.predict_x0);

  const SchedulerConfig ddpm = empty.for_class("DDPMScheduler");
  EXPECT_EQ(ddpm.variance_type, "fixed_small");
  EXPECT_TRUE(ddpm.clip_sample);
}

TEST(SchedulerConfig, FileKeysCarryOverToOtherClasses) {
  const SchedulerConfig sd1 = SchedulerConfig::sd1_default();
  EXPECT_EQ(sd1.class_name, "PNDMScheduler");
  EXPECT_TRUE(sd1.skip_prk_steps);
  const SchedulerConfig euler = sd1.for_class("EulerDiscreteScheduler");
  EXPECT_EQ(euler.beta_schedule, BetaSchedule::ScaledLinear);
  EXPECT_EQ(euler.beta_start, 0.00085);
  EXPECT_EQ(euler.steps_offset, 1);
  EXPECT_EQ(euler.timestep_spacing, TimestepSpacing::Linspace);  // absent from the file: Euler's default
  const SchedulerConfig ddim = sd1.for_class("DDIMScheduler");
  EXPECT_FALSE(ddim.set_alpha_to_one);  // present in the file
  EXPECT_FALSE(ddim.clip_sample);

  const SchedulerConfig sd2 = SchedulerConfig::sd2_v_default();
  EXPECT_EQ(sd2.class_name, "DDIMScheduler");
  EXPECT_EQ(sd2.prediction_type, PredictionType::VPrediction);
  EXPECT_EQ(sd2.for_class("UniPCMultistepScheduler").prediction_type, PredictionType::VPrediction);
}

TEST(SchedulerConfig, SingleFileDefaultsEqualTheTinyModelsFiles) {
  OTTER_REQUIRE_SHARED(shared);
  const auto sd1 = SchedulerConfig::from_file(shared / "models/tiny-sd1/scheduler/scheduler_config.json");
  const auto sd2 = SchedulerConfig::from_file(shared / "models/tiny-sd2/scheduler/scheduler_config.json");
  EXPECT_EQ(SchedulerConfig::sd1_default().to_json(), sd1.to_json());
  EXPECT_EQ(SchedulerConfig::sd2_v_default().to_json(), sd2.to_json());
  EXPECT_EQ(SchedulerConfig::sd1_default().given, sd1.given);
  EXPECT_EQ(SchedulerConfig::sd2_v_default().given, sd2.given);
}

TEST(SchedulerConfig, BadValuesNameTheKey) {
  EXPECT_NE(error_of([] { SchedulerConfig::from_json(json{{"beta_schedule", "cosine"}}, "DDIMScheduler"); })
                .find("beta_schedule"),
            std::string::npos);
  EXPECT_NE(error_of([] { SchedulerConfig::from_json(json{{"steps_offset", "one"}}, "DDIMScheduler"); })
                .find("steps_offset"),
            std::string::npos);
  EXPECT_NE(error_of([] { SchedulerConfig::from_json(json::object(), "KarrasVeScheduler"); }).find("unknown"),
            std::string::npos);
  EXPECT_NE(error_of([] { SchedulerConfig::from_json(json::object()); }).find("_class_name"), std::string::npos);
  // Python's -Infinity arrives either as a number or (kept as text) as a string.
  EXPECT_TRUE(std::isinf(
      SchedulerConfig::from_json(json{{"lambda_min_clipped", "-Infinity"}}, "DPMSolverMultistepScheduler")
          .lambda_min_clipped));
}

TEST(SamplerRegistry, NamesAndClasses) {
  const std::vector<std::string_view> want = {"pndm",  "lms",     "ddim", "ddpm",     "euler",
                                              "euler_a", "heun", "dpmpp_2m", "dpmpp_2m_karras", "unipc"};
  EXPECT_EQ(sampler_names(), want);
  EXPECT_EQ(diffusers_class_of("euler_a"), "EulerAncestralDiscreteScheduler");
  EXPECT_EQ(diffusers_class_of("dpmpp_2m_karras"), "DPMSolverMultistepScheduler");
  const SchedulerConfig sd1 = SchedulerConfig::sd1_default();
  for (std::string_view name : sampler_names()) {
    const auto s = make_sampler(name, sd1);
    EXPECT_EQ(s->name(), name);
    EXPECT_EQ(s->config().class_name, diffusers_class_of(name));
  }
}

TEST(SamplerRegistry, UnknownNameListsTheNames) {
  const std::string msg = error_of([] { make_sampler("k_lms", SchedulerConfig::sd1_default()); });
  EXPECT_NE(msg.find("k_lms"), std::string::npos);
  for (std::string_view name : sampler_names()) EXPECT_NE(msg.find(name), std::string::npos) << name;
}

TEST(SamplerRegistry, NameImpliedSettings) {
  json file = SchedulerConfig::sd1_default().given;
  file["_class_name"] = "DPMSolverMultistepScheduler";
  file["solver_order"] = 3;
  file["use_karras_sigmas"] = true;
  const SchedulerConfig model = SchedulerConfig::from_json(file);
  const auto plain = make_sampler("dpmpp_2m", model);
  EXPECT_EQ(plain->config().solver_order, 2);
  EXPECT_FALSE(plain->config().use_karras_sigmas);
  EXPECT_TRUE(make_sampler("dpmpp_2m_karras", SchedulerConfig::sd1_default())->config().use_karras_sigmas);
  SamplerOptions karras;
  karras.use_karras_sigmas = true;
  EXPECT_TRUE(make_sampler("euler", SchedulerConfig::sd1_default(), karras)->config().use_karras_sigmas);
  EXPECT_TRUE(make_sampler("dpmpp_2m", SchedulerConfig::sd1_default(), karras)->config().use_karras_sigmas);
}

TEST(SamplerRegistry, OptionsThatDoNotApplyAreRejected) {
  SamplerOptions eta;
  eta.eta = 0.5;
  EXPECT_NO_THROW(make_sampler("ddim", SchedulerConfig::sd1_default(), eta));
  EXPECT_NE(error_of([&] { make_sampler("euler_a", SchedulerConfig::sd1_default(), eta); }).find("eta"),
            std::string::npos);
  SamplerOptions karras;
  karras.use_karras_sigmas = true;
  EXPECT_NE(error_of([&] { make_sampler("ddim", SchedulerConfig::sd1_default(), karras); }).find("Karras"),
            std::string::npos);
  karras.use_karras_sigmas = false;
  EXPECT_THROW(make_sampler("dpmpp_2m_karras", SchedulerConfig::sd1_default(), karras), Error);
}

TEST(SamplerRegistry, UnsupportedSettingsAreRejectedNotIgnored) {
  json file = SchedulerConfig::sd1_default().given;
  file["skip_prk_steps"] = false;
  EXPECT_NE(error_of([&] { make_sampler("pndm", SchedulerConfig::from_json(file)); }).find("skip_prk_steps"),
            std::string::npos);
  file = SchedulerConfig::sd1_default().given;
  file["thresholding"] = true;
  EXPECT_NE(error_of([&] { make_sampler("ddim", SchedulerConfig::from_json(file)); }).find("thresholding"),
            std::string::npos);
  file = SchedulerConfig::sd1_default().given;
  file["variance_type"] = "learned_range";
  EXPECT_NE(error_of([&] { make_sampler("ddpm", SchedulerConfig::from_json(file)); }).find("variance_type"),
            std::string::npos);
}

}  // namespace
}  // namespace otter

// Every sampler against diffusers 0.30.3, without a UNet: the pipeline goldens record, per UNet
// evaluation, the model input, the guided prediction and the latents after the scheduler step
// (plus every randn the scheduler drew). Feeding the recorded prediction and the recorded latents
// before a step into our step() must give the recorded latents after it (README section 5:
// |d| <= 1e-4 * max|latents|); the chained run feeds our own latents instead.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <sstream>

#include "core/error.h"
#include "sampling/sampler.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

constexpr double kLatentTolerance = 1e-4;  // relative to max|golden latents| of the step
// Every sampler reproduces diffusers' float32 arithmetic; all but LMS bit for bit (LMS integrates
// its coefficients exactly where diffusers uses scipy's quadrature of a float32 integrand, ~1e-7).
// A wrong order of operations or a float64 quantity where diffusers has float32 shows up above
// this level long before it reaches kLatentTolerance.
constexpr double kRoundingLevel = 1e-6;

// The golden randn draws of a case, handed out in order; checks the draw size.
class ReplayNoise : public NoiseGenerator {
 public:
  explicit ReplayNoise(Tensor draws) : draws_(std::move(draws)) {}
  void randn(float* out, size_t n) override {
    OTTER_CHECK(draws_.defined(), "sampler drew noise but diffusers drew none");
    OTTER_CHECK(next_ < draws_.dim(0), "sampler drew noise ", next_ + 1, " times; diffusers drew ", draws_.dim(0));
    const Tensor d = draws_.slice(0, next_, next_ + 1);
    OTTER_CHECK(static_cast<int64_t>(n) == d.numel(), "draw ", next_, " has ", n, " values; diffusers drew ",
                d.numel());
    std::memcpy(out, d.f32(), n * sizeof(float));
    ++next_;
  }
  int64_t used() const { return next_; }

 private:
  Tensor draws_;
  int64_t next_ = 0;
};

struct GoldenCase {
  const char* model;
  const char* id;
};

std::string sampler_name_for(const nlohmann::json& c) {
  const std::string cls = c["params"]["scheduler"].get<std::string>();
  if (cls == "DPMSolverMultistepScheduler")
    return c["scheduler_config"]["use_karras_sigmas"].get<bool>() ? "dpmpp_2m_karras" : "dpmpp_2m";
  for (std::string_view name : sampler_names())
    if (diffusers_class_of(name) == cls) return std::string(name);
  throw Error(cat("no sampler for diffusers class ", cls));
}

Tensor row(const Tensor& t, int64_t k) { return t.slice(0, k, k + 1).squeeze_front(); }

const std::vector<GoldenCase>& all_cases() {
  static const std::vector<GoldenCase> cases = {
      {"tiny-sd1", "pndm"},         {"tiny-sd1", "lms"},
      {"tiny-sd1", "ddim"},         {"tiny-sd1", "euler"},
      {"tiny-sd1", "euler_a"},      {"tiny-sd1", "dpmpp_2m"},
      {"tiny-sd1", "dpmpp_2m_karras"}, {"tiny-sd1", "heun"},
      {"tiny-sd1", "ddpm"},         {"tiny-sd1", "unipc"},
      {"tiny-sd1", "lms_negative"}, {"tiny-sd1", "lms_g1"},
      {"tiny-sd1", "lms_g0_forced_cfg"}, {"tiny-sd1", "lms_gneg7.5_forced_cfg"},
      {"tiny-sd1", "lms_nipp2"},    {"tiny-sd1", "lms_two_prompts"},
      {"tiny-sd2", "ddim"},         {"tiny-sd2", "euler"},
      {"tiny-sd2", "ddim_rescale0.7"}, {"tiny-sd2", "euler_rescale0.7"},
  };
  return cases;
}

class SamplerGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(SamplerGolden, MatchesDiffusersStepByStep) {
  OTTER_REQUIRE_SHARED(shared);
  const GoldenCase gc = GetParam();
  const testing::Golden golden(shared / "golden" / (std::string(gc.model) + "_pipelines.json"));
  const nlohmann::json& c = golden.case_by_id(gc.id);
  const nlohmann::json& tensors = c["tensors"];
  const std::string name = sampler_name_for(c);
  const int steps = c["params"]["num_inference_steps"].get<int>();
  SamplerOptions options;
  if (name == "ddim") options.eta = c["params"]["eta"].get<double>();

  // The effective config diffusers reported is what make_sampler derives from the model's file.
  const SchedulerConfig model_config =
      SchedulerConfig::from_file(shared / "models" / gc.model / "scheduler" / "scheduler_config.json");
  {
    const nlohmann::json ours = make_sampler(name, model_config, options)->config().to_json();
    const nlohmann::json& theirs = c["scheduler_config"];
    int compared = 0;
    for (const auto& [key, value] : theirs.items()) {
      if (key.empty() || key[0] == '_' || !ours.contains(key)) continue;
      if (value.is_number() && ours[key].is_number()) {
        EXPECT_EQ(ours[key].get<double>(), value.get<double>()) << "config key " << key;
      } else {
        EXPECT_EQ(ours[key], value) << "config key " << key;
      }
      ++compared;
    }
    EXPECT_GE(compared, 8);
  }

  // Build from the reported effective config, as the task states.
  std::unique_ptr<Sampler> sampler = make_sampler(name, SchedulerConfig::from_json(c["scheduler_config"]), options);
  sampler->set_timesteps(steps);
  const int S = c["unet_evaluations"].get<int>();
  ASSERT_EQ(sampler->num_evaluations(), S);

  // Timesteps exactly (they are integers or float32 values diffusers computed the same way).
  const Tensor ts = golden.tensor_ref(tensors["timesteps"]);
  for (int k = 0; k < S; ++k) {
    const double want = ts.dtype() == DType::I64 ? static_cast<double>(ts.data<int64_t>()[k]) : ts.f32()[k];
    EXPECT_EQ(sampler->timesteps()[static_cast<size_t>(k)], want) << "timestep " << k;
  }
  // Sigmas to float32 rounding (alphas_cumprod differs from torch's in the last bits).
  double sigma_rel = 0;
  if (tensors.contains("sigmas")) {
    const Tensor sg = golden.tensor_ref(tensors["sigmas"]);
    ASSERT_EQ(static_cast<int64_t>(sampler->sigmas().size()), sg.numel());
    for (int64_t k = 0; k < sg.numel(); ++k) {
      const double want = sg.f32()[k], got = sampler->sigmas()[static_cast<size_t>(k)];
      const double rel = want == 0 ? std::abs(got) : std::abs(got - want) / want;
      sigma_rel = std::max(sigma_rel, rel);
      EXPECT_LE(rel, 1e-6) << "sigma " << k << ": " << got << " vs " << want;
    }
  } else {
    EXPECT_TRUE(sampler->sigmas().empty());
  }

  const double want_sigma = c["init_noise_sigma"].get<double>();
  EXPECT_NEAR(sampler->init_noise_sigma(), want_sigma, 1e-6 * want_sigma);
  // latents_init = init_noise * init_noise_sigma, one float32 multiply.
  const Tensor init_noise = golden.tensor_ref(tensors["init_noise"]);
  const Tensor latents_init = golden.tensor_ref(tensors["latents_init"]);
  {
    Tensor ours = init_noise.clone();
    for (int64_t i = 0; i < ours.numel(); ++i) ours.f32()[i] *= sampler->init_noise_sigma();
    EXPECT_LE(testing::max_abs_diff(ours, latents_init), 1e-6 * testing::max_abs(latents_init));
  }

  const Tensor model_input = golden.tensor_ref(tensors["model_input"]);
  const Tensor noise_pred = golden.tensor_ref(tensors["noise_pred"]);
  const Tensor latents = golden.tensor_ref(tensors["latents"]);
  const Tensor step_noise = tensors.contains("step_noise") ? golden.tensor_ref(tensors["step_noise"]) : Tensor();
  const int64_t B = latents.dim(1);
  const int64_t rows = model_input.dim(1);  // 2B with CFG: [x, x]

  // Teacher-forced: golden latents in, one step, compare.
  ReplayNoise noise(step_noise);
  double worst_step = 0, worst_input = 0;
  int worst_k = 0;
  for (int k = 0; k < S; ++k) {
    const Tensor before = k == 0 ? latents_init : row(latents, k - 1);
    // UNet input: every row block of model_input is the scaled latents.
    Tensor scaled = before.clone();
    sampler->scale_model_input(scaled, k);
    const Tensor want_input = row(model_input, k);
    for (int64_t r = 0; r < rows; r += B) {
      const Tensor want = want_input.slice(0, r, r + B);
      const double err = testing::max_abs_diff(scaled, want) / testing::max_abs(want);
      worst_input = std::max(worst_input, err);
      EXPECT_LE(err, 1e-6) << "model input, step " << k << " rows " << r;
    }
    Tensor x = before.clone();
    sampler->step(row(noise_pred, k), k, x, noise);
    const Tensor want = row(latents, k);
    const double rel = testing::max_abs_diff(x, want) / testing::max_abs(want);
    if (rel > worst_step) worst_step = rel, worst_k = k;
    EXPECT_LE(rel, kLatentTolerance) << "step " << k;
    EXPECT_LE(rel, kRoundingLevel) << "step " << k;
  }
  EXPECT_EQ(noise.used(), step_noise.defined() ? step_noise.dim(0) : 0) << "number of noise draws";

  // Chained: our own latents all the way, golden predictions.
  sampler->set_timesteps(steps);
  ReplayNoise chained_noise(step_noise);
  Tensor x = latents_init.clone();
  double worst_chained = 0;
  for (int k = 0; k < S; ++k) {
    sampler->step(row(noise_pred, k), k, x, chained_noise);
    const Tensor want = row(latents, k);
    worst_chained = std::max(worst_chained, testing::max_abs_diff(x, want) / testing::max_abs(want));
  }
  const Tensor final_latents = golden.tensor_ref(tensors["final_latents"]);
  const double final_rel = testing::max_abs_diff(x, final_latents) / testing::max_abs(final_latents);
  EXPECT_LE(final_rel, kLatentTolerance);
  EXPECT_LE(worst_chained, kRoundingLevel);

  std::ostringstream report;
  report << "[sampler golden] " << gc.model << "/" << gc.id << " (" << name << ", " << S << " evals): "
         << "step max rel " << worst_step << " (step " << worst_k << "), chained final rel " << final_rel
         << " (worst step " << worst_chained << "), model input rel " << worst_input << ", sigmas rel " << sigma_rel;
  std::cout << report.str() << "\n";
  RecordProperty("report", report.str());
}

std::string case_name(const ::testing::TestParamInfo<GoldenCase>& info) {
  std::string s = std::string(info.param.model) + "_" + info.param.id;
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(AllPipelineCases, SamplerGolden, ::testing::ValuesIn(all_cases()), case_name);

// The list above must be every pipeline case of both manifests.
TEST(SamplerGoldenCoverage, EveryManifestCaseIsTested) {
  OTTER_REQUIRE_SHARED(shared);
  for (const char* model : {"tiny-sd1", "tiny-sd2"}) {
    const testing::Golden golden(shared / "golden" / (std::string(model) + "_pipelines.json"));
    for (const auto& c : golden.manifest()["cases"]) {
      const std::string id = c["id"].get<std::string>();
      bool found = false;
      for (const GoldenCase& gc : all_cases()) found |= gc.model == std::string(model) && gc.id == id;
      EXPECT_TRUE(found) << model << "/" << id << " has no sampler test";
    }
  }
}

}  // namespace
}  // namespace otter

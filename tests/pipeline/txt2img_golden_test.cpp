// End-to-end parity with diffusers' StableDiffusionPipeline: for every pipeline case in
// ../shared/golden (every sampler, negative prompt, scale 1 without the uncond pass, scale 0,
// negative scale, two images per prompt, two prompts, SD2 v-prediction with and without rescale),
// otter's per-step latents, final latents, decoded image and 8-bit image must match.
// Tolerances (../shared/README.md section 5): latents |Δ| <= 1e-4·max|latents| per step, float
// image |Δ| <= 1e-3, uint8 |Δ| <= 1 on at most 0.5% of values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "backend/backend.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

struct CaseResult {
  double max_step_rel = 0;   // max over steps of |Δ latents| / max|latents|
  double final_abs = 0;
  double decoded_abs = 0;
  int64_t uint8_off = 0, uint8_total = 0;
  int uint8_max = 0;
};

std::vector<std::string> as_list(const nlohmann::json& j) {
  if (j.is_null()) return {};
  if (j.is_string()) return {j.get<std::string>()};
  return j.get<std::vector<std::string>>();
}

Txt2ImgRequest request_for(const nlohmann::json& c) {
  const nlohmann::json& p = c["params"];
  Txt2ImgRequest r;
  r.prompts = as_list(p["prompt"]);
  r.negative_prompts = as_list(p["negative_prompt"]);
  r.images_per_prompt = p["num_images_per_prompt"].get<int>();
  r.width = p["width"].get<int>();
  r.height = p["height"].get<int>();
  r.steps = p["num_inference_steps"].get<int>();
  r.seed = p["seed"].get<uint64_t>();
  r.guidance.schedule = GuidanceSchedule::constant(p["guidance_scale"].get<float>());
  r.guidance.rescale = p["guidance_rescale"].get<float>();
  r.sampler_options.eta = p["eta"].get<double>();
  // The case's complete effective scheduler config, class included.
  nlohmann::json config = c["scheduler_config"];
  config["_class_name"] = p["scheduler"];
  r.scheduler_config = SchedulerConfig::from_json(config, p["scheduler"].get<std::string>());
  r.sampler = default_sampler_for(*r.scheduler_config);
  r.keep_decoded = true;
  return r;
}

CaseResult run_case(StableDiffusion& model, const testing::Golden& golden, const nlohmann::json& c) {
  const Txt2ImgRequest request = request_for(c);
  const auto& t = c["tensors"];
  const Tensor want_latents = golden.tensor_ref(t["latents"]);
  CaseResult out;
  Txt2ImgTrace trace;
  trace.on_step = [&](int k, const Tensor&, const Tensor&, const Tensor& latents) {
    const Tensor want = want_latents.slice(0, k, k + 1).squeeze_front();
    out.max_step_rel = std::max(out.max_step_rel, testing::max_abs_diff(latents, want) / testing::max_abs(want));
  };
  const Txt2ImgResult result = txt2img(model, request, {}, trace);

  EXPECT_EQ(testing::max_abs_diff(result.init_noise, golden.tensor_ref(t["init_noise"])), 0.0) << "seeded noise";
  const int64_t rows_per_eval = golden.tensor_ref(t["unet_out"]).dim(1);
  EXPECT_EQ(result.unet_rows, static_cast<uint64_t>(c["unet_evaluations"].get<int>() * rows_per_eval))
      << "UNet rows evaluated";
  out.final_abs = testing::max_abs_diff(result.final_latents, golden.tensor_ref(t["final_latents"]));
  out.decoded_abs = testing::max_abs_diff(result.decoded, golden.tensor_ref(t["decoded"]));
  const Tensor want_u8 = golden.tensor_ref(t["image_uint8"]);
  out.uint8_total = want_u8.numel();
  for (int64_t i = 0; i < want_u8.numel(); ++i) {
    const int d = std::abs(int(result.image.data<uint8_t>()[i]) - int(want_u8.data<uint8_t>()[i]));
    out.uint8_max = std::max(out.uint8_max, d);
    out.uint8_off += d != 0;
  }
  return out;
}

void expect_within_tolerance(const CaseResult& r, const std::string& what) {
  EXPECT_LE(r.max_step_rel, 1e-4) << what;
  EXPECT_LE(r.decoded_abs, 1e-3) << what;
  EXPECT_LE(r.uint8_max, 1) << what;
  EXPECT_LE(static_cast<double>(r.uint8_off), 0.005 * static_cast<double>(r.uint8_total)) << what;
  std::printf("[ parity   ] %-34s latents max rel/step %.2e  final |d| %.2e  decoded |d| %.2e  uint8 off %lld/%lld\n",
              what.c_str(), r.max_step_rel, r.final_abs, r.decoded_abs, static_cast<long long>(r.uint8_off),
              static_cast<long long>(r.uint8_total));
}

class PipelineGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(PipelineGolden, EveryCaseMatchesDiffusers) {
  OTTER_REQUIRE_SHARED(shared);
  const std::string name = GetParam();
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / name, *backend);
  const testing::Golden golden(shared / "golden" / (name + "_pipelines.json"));
  for (const auto& c : golden.manifest()["cases"]) {
    const std::string id = c["id"].get<std::string>();
    expect_within_tolerance(run_case(*model, golden, c), name + "/" + id);
  }
}

// The original single-file layout gives the same results (one case per model is enough: the
// loading is what differs). The tiny architectures need their configs, given as config.json files
// rather than the folder, so no tokenizer comes along: the built-in CLIP vocabulary and the family's
// pad token (SD 1.x EOS, SD 2.x "!") must give the goldens.
TEST_P(PipelineGolden, SingleFileLayoutMatchesToo) {
  OTTER_REQUIRE_SHARED(shared);
  const std::string name = GetParam();
  auto backend = make_cpu_backend(Precision::F32);
  LoadOptions options;
  const std::filesystem::path folder = shared / "models" / name;
  options.model.config = {folder / "text_encoder" / "config.json", folder / "unet" / "config.json",
                          folder / "vae" / "config.json", folder / "scheduler" / "scheduler_config.json"};
  auto model = StableDiffusion::load(shared / "models" / (name + ".safetensors"), *backend, options);
  EXPECT_TRUE(model->tokenizer().dir().empty()) << "expected the built-in vocabulary, got " << model->tokenizer().dir();
  const testing::Golden golden(shared / "golden" / (name + "_pipelines.json"));
  const auto& c = golden.manifest()["cases"][0];
  expect_within_tolerance(run_case(*model, golden, c), name + ".safetensors/" + c["id"].get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(TinyModels, PipelineGolden, ::testing::Values("tiny-sd1", "tiny-sd2"),
                         [](const auto& p) { return p.param == "tiny-sd1" ? std::string("sd1") : std::string("sd2"); });

}  // namespace
}  // namespace otter

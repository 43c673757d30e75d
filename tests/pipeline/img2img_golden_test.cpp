// Image to image against diffusers' StableDiffusionImg2ImgPipeline (tests/goldens/img2img.*, made
// by tests/goldens/make_goldens.py): every sampler at strength 0.6, strength 1 and 0.25, a negative
// prompt, two images per prompt, two prompts, SD2 (v-prediction); the picture's latent sample, the
// noise, the noised start, every step's latents, the decode and the 8-bit image must match, within
// the tolerances of the text-to-image goldens (latents |Δ| <= 1e-4·max|latents| per step, uint8
// |Δ| <= 1 on at most 0.5% of values). The golden's f32-vs-f64 error is of the same order.
#include <gtest/gtest.h>

#include <cstdio>

#include "backend/backend.h"
#include "io/png.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

const std::filesystem::path kGoldens = OTTER_PROJECT_GOLDEN_DIR;

std::vector<std::string> as_list(const nlohmann::json& j) {
  if (j.is_null()) return {};
  if (j.is_string()) return {j.get<std::string>()};
  return j.get<std::vector<std::string>>();
}

Txt2ImgRequest request_for(const nlohmann::json& c, const std::string& sampler) {
  const nlohmann::json& p = c["params"];
  Txt2ImgRequest r;
  r.prompts = as_list(p["prompt"]);
  r.negative_prompts = as_list(p["negative_prompt"]);
  r.images_per_prompt = p["num_images_per_prompt"].get<int>();
  r.steps = p["num_inference_steps"].get<int>();
  r.seed = p["seed"].get<uint64_t>();
  r.guidance.schedule = GuidanceSchedule::constant(p["guidance_scale"].get<float>());
  r.sampler = sampler;
  const PngImage picture = read_png(kGoldens / c["init_image"].get<std::string>());
  r.init_image = InitImage{.pixels = picture_to_vae_input(picture), .strength = p["strength"].get<double>()};
  r.width = picture.width;
  r.height = picture.height;
  r.keep_decoded = true;
  return r;
}

std::string sampler_of(const std::string& id) {
  const std::string name = id.substr(id.find('/') + 1);
  for (const char* s : {"dpmpp_2m_karras", "dpmpp_2m", "euler_a", "euler", "pndm", "lms", "ddim", "heun", "ddpm", "unipc"})
    if (name.rfind(s, 0) == 0) return s;
  throw Error("no sampler in case id " + id);
}

void run_case(StableDiffusion& model, const testing::Golden& golden, const nlohmann::json& c, const std::string& what) {
  const Txt2ImgRequest request = request_for(c, sampler_of(c["id"].get<std::string>()));
  const auto& t = c["tensors"];
  const Tensor want_latents = golden.tensor_ref(t["latents"]);
  double max_step_rel = 0;
  int steps_seen = 0;
  Txt2ImgTrace trace;
  trace.on_step = [&](int, const Tensor&, const Tensor&, const Tensor& latents) {
    const Tensor want = want_latents.slice(0, steps_seen, steps_seen + 1).squeeze_front();
    max_step_rel = std::max(max_step_rel, testing::max_abs_diff(latents, want) / testing::max_abs(want));
    ++steps_seen;
  };
  const Txt2ImgResult result = txt2img(model, request, {}, trace);
  EXPECT_EQ(steps_seen, c["unet_evaluations"].get<int>()) << what << ": evaluations run";
  EXPECT_EQ(result.evaluations, steps_seen) << what;
  // The noise is the generator's second draw: equal bits, which also proves the first draw (the
  // picture's latent sample) took exactly as many values as diffusers'.
  EXPECT_EQ(testing::max_abs_diff(result.init_noise, golden.tensor_ref(t["noise"])), 0.0) << what << ": noise";
  const Tensor want_image_latents = golden.tensor_ref(t["image_latents"]);
  const double image_latents_rel = testing::max_abs_diff(result.image_latents, want_image_latents.slice(0, 0, 1)) /
                                   testing::max_abs(want_image_latents);
  EXPECT_LE(image_latents_rel, 1e-4) << what << ": the picture's latents";
  const double final_rel = testing::max_abs_diff(result.final_latents, golden.tensor_ref(t["final_latents"])) /
                           testing::max_abs(golden.tensor_ref(t["final_latents"]));
  const double decoded_abs = testing::max_abs_diff(result.decoded, golden.tensor_ref(t["decoded"]));
  const testing::ByteDiff u8 = testing::byte_diff(result.image.data<uint8_t>(), golden.tensor_ref(t["image_uint8"]));
  EXPECT_LE(max_step_rel, 1e-4) << what;
  EXPECT_LE(decoded_abs, 1e-3) << what;
  EXPECT_LE(u8.max, 1) << what;
  EXPECT_LE(static_cast<double>(u8.off), 0.005 * static_cast<double>(u8.total)) << what;
  std::printf("[ parity   ] %-40s image latents rel %.2e  latents max rel/step %.2e  final rel %.2e  decoded |d| %.2e"
              "  uint8 off %lld/%lld\n",
              what.c_str(), image_latents_rel, max_step_rel, final_rel, decoded_abs, static_cast<long long>(u8.off),
              static_cast<long long>(u8.total));
}

void run_cases(const std::string& model_name, StableDiffusion& model, const std::string& label, bool first_only) {
  const testing::Golden golden(kGoldens / "img2img.json");
  for (const auto& c : golden.manifest()["cases"]) {
    if (c["model"].get<std::string>() != "models/" + model_name) continue;
    run_case(model, golden, c, label + c["id"].get<std::string>());
    if (first_only) break;
  }
}

class Img2ImgGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(Img2ImgGolden, EveryCaseMatchesDiffusers) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / GetParam(), *backend);
  run_cases(GetParam(), *model, "", false);
}

// The original single-file layout: its VAE encoder comes through the key mapping too.
TEST_P(Img2ImgGolden, SingleFileLayoutMatchesToo) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  LoadOptions options;
  const std::filesystem::path folder = shared / "models" / GetParam();
  options.model.config = {folder / "text_encoder" / "config.json", folder / "unet" / "config.json",
                          folder / "vae" / "config.json", folder / "scheduler" / "scheduler_config.json"};
  auto model = StableDiffusion::load(shared / "models" / (GetParam() + ".safetensors"), *backend, options);
  run_cases(GetParam(), *model, "single file: ", true);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, Img2ImgGolden, ::testing::Values("tiny-sd1", "tiny-sd2"),
                         [](const auto& p) { return p.param == "tiny-sd1" ? std::string("sd1") : std::string("sd2"); });

TEST(Img2ImgStrength, FirstStepIsDiffusersGetTimesteps) {
  // init = min(int(steps * strength), steps); t_start = steps - init.
  EXPECT_EQ(img2img_first_step(10, 0.6), 4);
  EXPECT_EQ(img2img_first_step(10, 1.0), 0);
  EXPECT_EQ(img2img_first_step(10, 0.25), 8);
  EXPECT_EQ(img2img_first_step(20, 0.75), 5);
  EXPECT_EQ(img2img_first_step(3, 0.7), 1);  // int(2.1) = 2
  EXPECT_THROW(img2img_first_step(10, 0.0), Error);
  EXPECT_THROW(img2img_first_step(10, 1.5), Error);
  EXPECT_THROW(img2img_first_step(10, -0.2), Error);
  EXPECT_THROW(img2img_first_step(10, 0.05), Error);  // no step would run
}

}  // namespace
}  // namespace otter

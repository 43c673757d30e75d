// LoRA merged at load against tests/goldens/lora.* (random low-rank factors for the tiny models in
// the kohya and diffusers/PEFT layouts, merged by the formula in the oracle, then diffusers' txt2img
// loop): the text states and the final latents of each case, both checkpoint layouts for SD 1,
// within the text-to-image goldens' tolerance (latents |Δ| <= 1e-4·max|latents|).
#include <gtest/gtest.h>

#include <cstdio>

#include "backend/backend.h"
#include "pipeline/stable_diffusion.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

const std::filesystem::path kGoldens = OTTER_PROJECT_GOLDEN_DIR;

void run_case(const std::filesystem::path& shared, const nlohmann::json& c, const testing::Golden& golden, bool single_file,
              bool unmerged = false) {
  const std::string name = c["model"].get<std::string>().substr(7);
  auto backend = make_cpu_backend(Precision::F32);
  LoadOptions options;
  options.lora_unmerged = unmerged;
  for (const auto& l : c["loras"]) options.loras.push_back({kGoldens / l["file"].get<std::string>(), l["weight"].get<double>()});
  std::unique_ptr<StableDiffusion> model;
  if (single_file) {
    const std::filesystem::path folder = shared / "models" / name;
    options.model.config = {folder / "text_encoder" / "config.json", folder / "unet" / "config.json",
                            folder / "vae" / "config.json", folder / "scheduler" / "scheduler_config.json"};
    model = StableDiffusion::load(shared / "models" / (name + ".safetensors"), *backend, options);
  } else {
    model = StableDiffusion::load(shared / "models" / name, *backend, options);
  }
  const std::string what = cat(single_file ? "single file: " : "", unmerged ? "unmerged: " : "", c["id"].get<std::string>());
  const Tensor want_embeds = golden.tensor_ref(c["tensors"]["prompt_embeds"]);
  const Tensor cond = model->encode_prompts({c["prompt"].get<std::string>()});
  const double embeds = testing::max_abs_diff(cond, want_embeds.slice(0, 1, 2).contiguous()) / testing::max_abs(want_embeds);
  EXPECT_LE(embeds, 1e-5) << what << ": text states";
  Txt2ImgRequest r;
  r.prompts = {c["prompt"].get<std::string>()};
  r.width = r.height = 64;
  r.steps = c["steps"].get<int>();
  r.seed = c["seed"].get<uint64_t>();
  r.sampler = c["sampler"].get<std::string>();
  r.guidance.schedule = GuidanceSchedule::constant(c["guidance_scale"].get<float>());
  const Txt2ImgResult result = txt2img(*model, r);
  const Tensor want = golden.tensor_ref(c["tensors"]["final_latents"]);
  const double rel = testing::max_abs_diff(result.final_latents, want) / testing::max_abs(want);
  EXPECT_LE(rel, 1e-4) << what;
  std::printf("[ lora     ] %-36s text states rel %.2e  final latents rel %.2e (golden f32-vs-f64 %.2e)\n", what.c_str(),
              embeds, rel, c["f32_vs_f64"]["final_latents"]["max_rel_to_max"].get<double>());
}

TEST(LoraGolden, EveryCaseMatchesTheMergedReference) {
  OTTER_REQUIRE_SHARED(shared);
  const testing::Golden golden(kGoldens / "lora.json");
  for (const auto& c : golden.manifest()["cases"]) run_case(shared, c, golden, false);
}

TEST(LoraGolden, SingleFileLayoutMatchesToo) {
  OTTER_REQUIRE_SHARED(shared);
  const testing::Golden golden(kGoldens / "lora.json");
  for (const auto& c : golden.manifest()["cases"])
    if (c["id"] == "tiny-sd1/kohya0.8_peft-0.5" || c["id"] == "tiny-sd2/kohya0.8") run_case(shared, c, golden, true);
}

// Applied unmerged (each layer adds its low-rank update at run time), every case matches too.
TEST(LoraGolden, UnmergedMatchesTheMergedReference) {
  OTTER_REQUIRE_SHARED(shared);
  const testing::Golden golden(kGoldens / "lora.json");
  for (const auto& c : golden.manifest()["cases"]) run_case(shared, c, golden, false, true);
  const auto& c = golden.case_by_id("tiny-sd1/kohya0.8_peft-0.5");
  run_case(shared, c, golden, true, true);
}

}  // namespace
}  // namespace otter

// A guidance interval from the CLI on the bundled model (DDIM, an alpha-space sampler): the uncond
// rows are evaluated exactly at the steps whose sigma, computed here independently from the model's
// scaled-linear schedule, lies in (0.28, 5.42].
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"
#include "run_otter.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

TEST(OtterGuidance, IntervalEvaluatesUncondOnlyInsideIt) {
  // scaled_linear betas of the bundled model's scheduler (0.00085 .. 0.012 over 1000 steps).
  double alpha_bar[1000];
  double product = 1;
  for (int i = 0; i < 1000; ++i) {
    const double root = std::sqrt(0.00085) + (std::sqrt(0.012) - std::sqrt(0.00085)) * i / 999.0;
    product *= 1 - root * root;
    alpha_bar[i] = product;
  }
  int inside = 0;
  for (int k = 0; k < 20; ++k) {  // DDIM, 20 steps, steps_offset 1: t = 951, 901, ..., 1
    const double sigma = std::sqrt((1 - alpha_bar[951 - 50 * k]) / alpha_bar[951 - 50 * k]);
    inside += sigma > 0.28 && sigma <= 5.42;
  }
  const std::string out = (std::filesystem::temp_directory_path() / cat("otter_interval_", ::getpid(), ".png")).string();
  const testing::OtterRun r =
      testing::run_otter(cat("generate -p 'a red circle' --seed 1 --guidance 'cfg:scale=7.5;interval=0.28..5.42' -o '", out, "'"));
  std::filesystem::remove(out);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(testing::contains(r.err, cat("sampler ddim, ", 2 * inside + (20 - inside), " UNet rows"))) << inside << "\n" << r.err;
  EXPECT_TRUE(testing::contains(r.err, cat("skipped on ", 20 - inside, " UNet evaluations"))) << r.err;
}

// Every PAG golden case (diffusers 0.30.3's PAG pipeline on tiny-sd1) through the CLI path:
// `--guidance pag:…` with the model's own DDIM scheduler, the final latents from --save-latents,
// and the work the run took in that file's metadata (3 rows per evaluation, 1 of them perturbed).
TEST(OtterGuidance, PagGoldenCasesThroughTheCli) {
  OTTER_REQUIRE_SHARED(shared);
  const testing::Golden golden(shared / "golden" / "tiny-sd1_pag.json");
  const std::string latents = (std::filesystem::temp_directory_path() / cat("otter_pag_", ::getpid(), ".safetensors")).string();
  for (const nlohmann::json& c : golden.manifest()["cases"]) {
    const nlohmann::json& p = c["params"];
    std::string layers;
    for (const auto& l : p["pag_applied_layers"]) {
      if (!layers.empty()) layers += ',';
      layers += l.get<std::string>();
    }
    const std::string recipe = cat("pag:scale=", p["guidance_scale"].get<double>(), ",pag_scale=", p["pag_scale"].get<double>(),
                                   ",layers=[", layers, "]");
    const testing::OtterRun r = testing::run_otter(
        cat("generate -m '", (shared / "models" / "tiny-sd1").string(), "' -p '", p["prompt"].get<std::string>(), "' --seed ",
            p["seed"].get<int>(), " --steps ", p["num_inference_steps"].get<int>(), " -W ", p["width"].get<int>(), " -H ",
            p["height"].get<int>(), " --sampler ddim --precision f32 --guidance '", recipe, "' --save-latents '", latents,
            "' -o '", latents, ".png'"));
    std::filesystem::remove(latents + ".png");
    ASSERT_EQ(r.status, 0) << r.err;
    const SafetensorsFile saved = SafetensorsFile::open(latents);
    const Tensor want = golden.tensor_ref(c["tensors"]["final_latents"]);
    const double d = testing::max_abs_diff(saved.tensor("final_latents"), want);
    EXPECT_LE(d, 1e-4 * testing::max_abs(want)) << c["id"];
    const int rows = static_cast<int>(c["batch_rows"].size()), evaluations = c["unet_evaluations"].get<int>();
    EXPECT_EQ(saved.metadata().at("otter_unet_rows"), std::to_string(rows * evaluations)) << c["id"];
    EXPECT_EQ(saved.metadata().at("otter_unet_rows_perturbed"), std::to_string(evaluations)) << c["id"];
    EXPECT_EQ(saved.metadata().at("otter_unet_rows_saved"), "0") << c["id"];
    EXPECT_TRUE(testing::contains(r.err, cat(rows * evaluations, " UNet rows (", evaluations, " perturbed"))) << r.err;
    std::printf("[ pag cli  ] %-32s final |d| %.2e\n", c["id"].get<std::string>().c_str(), d);
  }
  std::filesystem::remove(latents);
}

// Composable prompts from the CLI: K sub-prompts + 1 uncond rows per step, the prompt recorded as
// given; with a guider the run is refused before any work.
TEST(OtterGuidance, ComposablePromptsTakeOneRowPerSubPrompt) {
  const std::string out = (std::filesystem::temp_directory_path() / cat("otter_and_", ::getpid(), ".png")).string();
  testing::OtterRun r = testing::run_otter(
      cat("generate -p 'a red circle AND a blue background :0.8' --seed 1 --steps 10 -o '", out, "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(testing::contains(r.err, "sampler ddim, 30 UNet rows")) << r.err;
  const testing::OtterRun info = testing::run_otter(cat("info '", out, "'"));
  EXPECT_TRUE(testing::contains(info.out, "a red circle AND a blue background :0.8")) << info.out;
  std::filesystem::remove(out);
  r = testing::run_otter(cat("generate -p 'a AND b' --guidance apg -o '", out, "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(testing::contains(r.err, "Drop --guidance, or the AND")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// Every method runs from the CLI on tiny-sd1 (3 DDIM steps), and the rows it logs are the rows
// otter-bench's table plans for it.
TEST(OtterGuidance, EveryMethodRunsOnTinySd1) {
  OTTER_REQUIRE_SHARED(shared);
  const std::string out = (std::filesystem::temp_directory_path() / cat("otter_methods_", ::getpid(), ".png")).string();
  const struct {
    const char* options;
    int rows;  // for 3 DDIM steps
  } methods[] = {
      {"--cfg-scale 7.5", 6},
      {"--guidance cfg", 6},
      {"--guidance cfg_zero_star", 6},
      {"--guidance apg", 6},
      {"--guidance tcfg", 6},
      {"--guidance mambo", 6},
      {"--guidance apg_mix", 6},
      {"--guidance fdg", 6},
      {"--guidance cfg_pp", 6},
      {"--guidance pag:layers=mid", 9},
      {"--guidance PerturbedAttentionGuidance:perturbed_guidance_stop=1,layers=down.1", 8},
      {"--guidance seg:layers=up.1", 8},
      {"--guidance slg:skip_layer_guidance_stop=1,layers=mid", 8},
      {"--guidance autoguidance:layers=mid", 6},
      {"--guidance 'cfg;interval=0.5..5'", 5},
      {"AND", 9},  // the prompt "an otter AND a hat :0.5"
  };
  for (const auto& m : methods) {
    const bool composable = std::string(m.options) == "AND";
    const testing::OtterRun r = testing::run_otter(
        cat("generate -m '", (shared / "models" / "tiny-sd1").string(), "' -p '",
            composable ? "an otter AND a hat :0.5" : "an otter", "' --steps 3 --sampler ddim ", composable ? "" : m.options,
            " -o '", out, "'"));
    EXPECT_EQ(r.status, 0) << m.options << "\n" << r.err;
    EXPECT_TRUE(testing::contains(r.err, cat("sampler ddim, ", m.rows, " UNet rows"))) << m.options << "\n" << r.err;
  }
  std::filesystem::remove(out);
}

// A layer name that matches nothing fails before any work, listing the layers.
TEST(OtterGuidance, UnknownLayerListsTheModelsLayers) {
  OTTER_REQUIRE_SHARED(shared);
  const std::string out = (std::filesystem::temp_directory_path() / cat("otter_badlayer_", ::getpid(), ".png")).string();
  const testing::OtterRun r = testing::run_otter(cat("generate -m '", (shared / "models" / "tiny-sd1").string(),
                                                     "' -p a --steps 2 --guidance 'seg:layers=down.9' -o '", out, "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(testing::contains(r.err, "transformer layer 'down.9' matches none")) << r.err;
  EXPECT_TRUE(testing::contains(r.err, "6  mid_block.attentions.0.transformer_blocks.0  (mid)")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace otter

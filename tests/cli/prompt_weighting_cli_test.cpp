// Prompt weighting through `otter generate`: the goldens' pipeline runs (stock diffusers given the
// reference's weighted embeddings for prompt and negative prompt) reproduced from the command line
// with the same prompts, within the text-to-image goldens' tolerance (final latents |Δ| <=
// 1e-4·max|latents|); `--emphasis none` is recorded and read back by --from.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "io/generation_parameters.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "run_otter.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
using testing::contains;

std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class OtterPromptWeighting : public testing::CliTest {
 protected:
};

TEST_F(OtterPromptWeighting, CliMatchesTheWeightedPipelines) {
  const testing::Golden golden(fs::path(OTTER_PROJECT_GOLDEN_DIR) / "prompt_weighting.json");
  int checked = 0;
  for (const auto& c : golden.manifest()["pipelines"]) {
    for (const bool single_file : {false, true}) {
      const std::string id = cat(single_file ? "single file: " : "", c["id"].get<std::string>());
      const fs::path latents = dir_ / "w.safetensors";
      const std::string sampler = c["scheduler"] == "DDIMScheduler" ? "ddim" : "euler_a";
      const fs::path folder = shared_ / c["model"].get<std::string>();
      std::string model = cat("-m '", folder.string(), "'");
      if (single_file) {  // the built-in vocabulary and the family's pad token, from the original layout
        model = cat("-m '", folder.string(), ".safetensors'");
        for (const char* f : {"text_encoder/config.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"})
          model += cat(" --config '", (folder / f).string(), "'");
      }
      const testing::OtterRun r = testing::run_otter(
          cat("generate ", model, " -p ",
              shell_quoted(c["prompt"].get<std::string>()), " -n ", shell_quoted(c["negative_prompt"].get<std::string>()),
              " --seed ", c["seed"].get<int>(), " --steps ", c["steps"].get<int>(), " --cfg-scale ",
              c["guidance_scale"].get<double>(), " --sampler ", sampler, " --precision f32 -q -o '",
              (dir_ / "w.png").string(), "' --save-latents '", latents.string(), "'"));
      ASSERT_EQ(r.status, 0) << id << ": " << r.err;
      const Tensor want = golden.tensor_ref(c["tensors"]["final_latents"]);
      const double rel = testing::max_abs_diff(SafetensorsFile::open(latents).tensor("final_latents"), want) /
                         testing::max_abs(want);
      EXPECT_LE(rel, 1e-4) << id;
      std::printf("[ weights  ] %-28s final latents max rel %.2e (golden's f32-vs-f64: %.2e)\n", id.c_str(), rel,
                  c["f32_vs_f64"]["final_latents"]["max_rel_to_max"].get<double>());
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4);
}

TEST_F(OtterPromptWeighting, EmphasisNoneIsRecordedAndBadWeightsFailEarly) {
  const std::string model = cat("-m '", (shared_ / "models" / "tiny-sd1").string(), "'");
  const fs::path a = dir_ / "a.png", b = dir_ / "b.png", c = dir_ / "c.png";
  testing::OtterRun r = testing::run_otter(cat("generate ", model, " -p 'a (red) circle' --steps 3 --emphasis none -q -o '",
                                               a.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(read_png(a).find_text("parameters").value(), "Emphasis: None"));
  r = testing::run_otter(cat("generate ", model, " --from '", a.string(), "' -q -o '", b.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_png(a).pixels, read_png(b).pixels);
  r = testing::run_otter(cat("generate ", model, " -p 'a (red) circle' --steps 3 -q -o '", c.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(read_png(a).pixels, read_png(c).pixels) << "weighting changes the image";
  fs::remove(c);
  for (const char* args : {"-p '(red:1.2.3) circle'", "-p a -n '(x:..)'"}) {
    r = testing::run_otter(cat("generate ", model, " ", args, " -o '", c.string(), "'"));
    EXPECT_NE(r.status, 0) << args;
    EXPECT_TRUE(contains(r.err, "is not a number")) << r.err;
    EXPECT_FALSE(contains(r.err, "loaded")) << "fails before loading: " << r.err;
    EXPECT_FALSE(fs::exists(c));
  }
  // Brackets reach the prompt as typed (CLI11 would read "[a, b]" as a list of two prompts).
  r = testing::run_otter(cat("generate ", model, " -p '[a, b]' -n '[x]' --steps 2 -q -o '", c.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  const GenerationParameters p = parse_parameters(read_png(c).find_text("parameters").value());
  EXPECT_EQ(p.prompt, "[a, b]");
  EXPECT_EQ(p.negative_prompt, "[x]");
  fs::remove(c);
  r = testing::run_otter(cat("generate ", model, " -p a --emphasis loud -o '", c.string(), "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "--emphasis must be 'original' or 'none'")) << r.err;
}

}  // namespace
}  // namespace otter

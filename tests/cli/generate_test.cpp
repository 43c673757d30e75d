// `otter generate`, run as a user would: the built binary on the tiny models in ../shared, its
// files, stdout, stderr and exit status. Bad input must fail with a clear message, a non-zero exit
// and no file left behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "run_otter.h"
#include "io/generation_parameters.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
using CliRun = testing::OtterRun;
using testing::contains;


class OtterGenerate : public testing::CliTest {
 protected:
  // Runs `otter generate <args>` (args already shell-quoted where needed).
  static CliRun generate(const std::string& args) { return testing::run_otter("generate " + args); }
  std::string model(const std::string& name = "tiny-sd1") const { return cat("-m '", (shared_ / "models" / name).string(), "'"); }
  // Files left in the work folder.
  int images_written() const {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++n;
    return n;
  }
};

TEST_F(OtterGenerate, WritesPngWithParametersAndDiffusersLatents) {
  const fs::path png = dir_ / "otter.png", latents = dir_ / "latents.safetensors";
  // f32 pinned: the default (auto) may pick bf16 on a CPU where that is faster.
  const CliRun r = generate(cat(model(), " -p 'a watercolor painting of an otter' --seed 42 --steps 10 --precision f32 -o '", png.string(),
                             "' --save-latents '", latents.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, png.string()));
  EXPECT_TRUE(contains(r.err, "step  11/11"));  // PNDM: 11 evaluations for 10 steps
  const PngImage image = read_png(png);
  EXPECT_EQ(image.width, 64);
  const GenerationParameters p = parse_parameters(image.find_text("parameters").value());
  EXPECT_EQ(p.prompt, "a watercolor painting of an otter");
  EXPECT_EQ(p.steps, 10);
  EXPECT_EQ(p.seed, 42u);
  EXPECT_EQ(p.cfg_scale, 7.5);
  EXPECT_EQ(p.sampler, "PLMS");
  EXPECT_EQ(p.model, "tiny-sd1");

  // The CLI's defaults (at f32) reproduce diffusers' default pipeline for this model (the `pndm` golden).
  const testing::Golden golden(shared_ / "golden" / "tiny-sd1_pipelines.json");
  const SafetensorsFile saved = SafetensorsFile::open(latents);
  EXPECT_EQ(testing::max_abs_diff(saved.tensor("init_noise"), golden.tensor("pndm/init_noise")), 0.0);
  const Tensor want = golden.tensor("pndm/final_latents");
  EXPECT_LE(testing::max_abs_diff(saved.tensor("final_latents"), want), 1e-4 * testing::max_abs(want));
}

TEST_F(OtterGenerate, SeveralImagesAreNumbered) {
  const CliRun r = generate(cat(model(), " -p a -p b --images 2 --steps 2 --sampler euler -q -o '", (dir_ / "x.png").string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(fs::exists(dir_ / cat("x-", i, ".png"))) << i;
  EXPECT_TRUE(r.err.empty()) << "--quiet prints nothing: " << r.err;
  const GenerationParameters p = parse_parameters(read_png(dir_ / "x-3.png").find_text("parameters").value());
  EXPECT_EQ(p.prompt, "b");
}

// --seed -1 draws a seed (the webui's convention), says it, and records it: the same command with
// that seed makes the same file.
TEST_F(OtterGenerate, SeedMinusOneDrawsARecordedSeed) {
  const fs::path a = dir_ / "a.png", b = dir_ / "b.png";
  const CliRun r = generate(cat(model(), " -p a --steps 2 --sampler euler --precision f32 --seed -1 -o '", a.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  const size_t at = r.err.find("--seed -1: drew seed ");
  ASSERT_NE(at, std::string::npos) << r.err;
  const uint64_t drawn = std::stoull(r.err.substr(at + 21));
  const GenerationParameters p = parse_parameters(read_png(a).find_text("parameters").value());
  EXPECT_EQ(p.seed, drawn);
  ASSERT_EQ(generate(cat(model(), " -p a --steps 2 --sampler euler --precision f32 -q --seed ", drawn, " -o '", b.string(), "'")).status, 0);
  EXPECT_EQ(testing::slurp(a), testing::slurp(b));
  EXPECT_NE(generate(cat(model(), " -p a --steps 2 --seed -2 -o '", b.string(), "'")).status, 0);
}

TEST_F(OtterGenerate, ScaleOneSaysTheUncondPassIsSkipped) {
  const CliRun r = generate(cat(model(), " -p a --steps 2 --cfg-scale 1 -o '", (dir_ / "a.png").string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "unconditional pass is skipped")) << r.err;
  EXPECT_TRUE(contains(r.err, ", 3 UNet rows")) << r.err;  // PNDM: 3 evaluations of 1 row
  EXPECT_TRUE(contains(r.err, "otter: precision ")) << r.err;  // the default (auto) says what it chose and why
}

// A single file with its configs as config.json files and no --tokenizer: no tokenizer file
// anywhere, so the built-in CLIP vocabulary is used (and said so), for both families.
TEST_F(OtterGenerate, SingleFileCheckpointNeedsNoTokenizerFiles) {
  for (const std::string name : {"tiny-sd1", "tiny-sd2"}) {
    const fs::path folder = shared_ / "models" / name;
    std::string configs;
    for (const char* c : {"text_encoder/config.json", "unet/config.json", "vae/config.json",
                          "scheduler/scheduler_config.json"})
      configs += cat(" --config '", (folder / c).string(), "'");
    const CliRun r = generate(cat("-m '", (shared_ / "models" / (name + ".safetensors")).string(), "'", configs,
                               " -p 'an otter' --steps 2 --rescale 0.7 -o '", (dir_ / (name + ".png")).string(), "'"));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.err, name == "tiny-sd1" ? "SD 1" : "SD 2")) << r.err;
    EXPECT_TRUE(contains(r.err, "tokenizer: built-in CLIP BPE vocabulary")) << r.err;
    EXPECT_TRUE(fs::is_regular_file(dir_ / (name + ".png")));
  }
}

// A guider recipe runs from the CLI, is logged with the rows it skips and lands in the PNG's parameters.
TEST_F(OtterGenerate, GuidanceRecipeRunsAndIsRecorded) {
  const fs::path png = dir_ / "apg.png";
  const CliRun r = generate(cat(model(), " -p a --steps 4 --guidance 'apg:scale=5,eta=0,start=0.5' -o '", png.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "otter: guidance apg:eta=0,guidance_scale=5,start=0.5\n")) << r.err;
  EXPECT_TRUE(contains(r.err, "otter: guidance: the unconditional pass was skipped on 3 UNet evaluations")) << r.err;
  // PNDM: 5 evaluations over the 4 steps (t = 751, 501, 501, 251, 1); steps 2 and 3 guided: 3x1 + 2x2 rows.
  EXPECT_TRUE(contains(r.err, ", 7 UNet rows")) << r.err;
  const testing::OtterRun info = testing::run_otter(cat("info '", png.string(), "'"));
  EXPECT_TRUE(contains(info.out, "Guidance: apg:eta=0,guidance_scale=5,start=0.5")) << info.out;
  EXPECT_TRUE(contains(info.out, "cfg scale:       5")) << info.out;
  const CliRun both = generate(cat(model(), " -p a --guidance apg --rescale 0.5 -o '", (dir_ / "x.png").string(), "'"));
  EXPECT_NE(both.status, 0);
  EXPECT_TRUE(contains(both.err, "--guidance takes the method's own parameters")) << both.err;
}

struct BadCase {
  const char* args;
  const char* message;
};

TEST_F(OtterGenerate, BadInputFailsCleanlyWithoutFiles) {
  const std::string out = cat(" -o '", (dir_ / "bad.png").string(), "'");
  const BadCase cases[] = {
      {"--sampler foo", "unknown sampler 'foo'"},
      {"-W 30", "not a multiple of 8"},
      {"--steps 4 --cfg-schedule list:1,2", "one scale per step"},
      {"--cfg-batch sideways", "--cfg-batch"},
      {"--precision fp16", "precision must be f32, bf16, f16 or auto, got 'fp16'"},
      {"--guidance fdg -W 72 -H 72", "frequency-decoupled guidance with 2 levels needs latents"},
      {"--guidance 'pag:layers=up.9'", "transformer layer 'up.9' matches none"},
      {"--guidance autoguidance:dropout=0.5", "otter supports dropout=1"},
      {"--guidance cfg_pp --sampler dpmpp_2m", "CFG++ needs a sampler whose step is a denoised estimate"},
  };
  for (const BadCase& c : cases) {
    const CliRun r = generate(cat(model(), " -p a ", c.args, out));
    EXPECT_NE(r.status, 0) << c.args;
    EXPECT_TRUE(contains(r.err, c.message)) << c.args << ": " << r.err;
    EXPECT_EQ(images_written(), 0) << c.args;
  }
  CliRun r = generate(cat("-m '", (dir_ / "no-such-model").string(), "' -p a", out));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "no-such-model")) << r.err;
  r = generate(cat(model(), " -p a -o '", (dir_ / "missing-folder" / "a.png").string(), "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "does not exist")) << r.err;
  EXPECT_EQ(images_written(), 0);
}

}  // namespace
}  // namespace otter

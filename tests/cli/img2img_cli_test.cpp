// `otter generate --init-image`: image to image through the CLI as a user runs it, against the
// diffusers goldens of tests/goldens/img2img.* (both checkpoint layouts), with its PNG record,
// `--from`, `--resize`, and bad input refused with the fix and no file written.
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
const fs::path kGoldens = OTTER_PROJECT_GOLDEN_DIR;

class OtterImg2Img : public testing::CliTest {
 protected:
  static testing::OtterRun generate(const std::string& args) { return testing::run_otter("generate " + args); }
  std::string folder_model(const std::string& name) const { return cat("-m '", (shared_ / "models" / name).string(), "'"); }
  std::string single_file_model(const std::string& name) const {
    const fs::path folder = shared_ / "models" / name;
    std::string m = cat("-m '", (shared_ / "models" / (name + ".safetensors")).string(), "'");
    for (const char* c : {"text_encoder/config.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"})
      m += cat(" --config '", (folder / c).string(), "'");
    return m;
  }
  static std::string input() { return cat("--init-image '", (kGoldens / "img2img_input.png").string(), "'"); }
  int files_written() const {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++n;
    return n;
  }

  // Runs golden case `id` through the CLI at f32 and compares its latents and 8-bit image.
  void expect_case(const std::string& model_args, const std::string& id, const std::string& sampler) {
    const testing::Golden golden(kGoldens / "img2img.json");
    const nlohmann::json& c = golden.case_by_id(id);
    const nlohmann::json& p = c["params"];
    const fs::path png = dir_ / "i2i.png", latents = dir_ / "i2i.safetensors";
    const testing::OtterRun r = generate(cat(model_args, " ", input(), " -p '", p["prompt"].get<std::string>(),
                                             "' --strength ", p["strength"].get<double>(), " --seed ", p["seed"].get<int>(),
                                             " --steps ", p["num_inference_steps"].get<int>(), " --sampler ", sampler,
                                             " --precision f32 -o '", png.string(), "' --save-latents '",
                                             latents.string(), "'"));
    ASSERT_EQ(r.status, 0) << r.err;
    // The progress bar counts the steps that run: t_start·order of the schedule are skipped.
    EXPECT_TRUE(contains(r.err, cat(c["unet_evaluations"].get<int>(), "/", c["unet_evaluations"].get<int>(), " [")))
        << r.err;
    const SafetensorsFile saved = SafetensorsFile::open(latents);
    EXPECT_EQ(testing::max_abs_diff(saved.tensor("init_noise"), golden.tensor(id + "/noise")), 0.0) << id;
    const Tensor want = golden.tensor(id + "/final_latents");
    EXPECT_LE(testing::max_abs_diff(saved.tensor("final_latents"), want), 1e-4 * testing::max_abs(want)) << id;
    const PngImage image = read_png(png);
    const Tensor want_u8 = golden.tensor(id + "/image_uint8");
    int64_t off = 0;
    for (int64_t i = 0; i < want_u8.numel(); ++i) {
      const int d = std::abs(int(image.pixels[static_cast<size_t>(i)]) - int(want_u8.data<uint8_t>()[i]));
      EXPECT_LE(d, 1) << id << " at " << i;
      off += d != 0;
    }
    EXPECT_LE(static_cast<double>(off), 0.005 * static_cast<double>(want_u8.numel())) << id;
  }
};

TEST_F(OtterImg2Img, CliMatchesDiffusersInBothLayouts) {
  expect_case(folder_model("tiny-sd1"), "tiny-sd1/euler_a", "euler_a");
  expect_case(single_file_model("tiny-sd1"), "tiny-sd1/dpmpp_2m", "dpmpp_2m");
  expect_case(folder_model("tiny-sd2"), "tiny-sd2/ddim", "ddim");
  expect_case(single_file_model("tiny-sd2"), "tiny-sd2/euler", "euler");
}

TEST_F(OtterImg2Img, StrengthIsRecordedAndFromNeedsThePicture) {
  const fs::path png = dir_ / "a.png";
  testing::OtterRun r = generate(cat(folder_model("tiny-sd1"), " ", input(), " -p a --strength 0.5 --steps 4 --sampler ddim -q -o '",
                                     png.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  const GenerationParameters p = parse_parameters(read_png(png).find_text("parameters").value());
  bool strength = false, init = false;
  for (const auto& [k, v] : p.extra) {
    strength = strength || (k == "Denoising strength" && v == "0.5");
    init = init || (k == "Init image" && v == "img2img_input.png");
  }
  EXPECT_TRUE(strength && init) << format_parameters(p);
  // --from needs the picture again (the PNG records its name, not its pixels) ...
  r = generate(cat(folder_model("tiny-sd1"), " --from '", png.string(), "' -o '", (dir_ / "b.png").string(), "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "was made from an init image (img2img_input.png); give the same picture with --init-image"))
      << r.err;
  // ... and with it rewrites the same image.
  r = generate(cat(folder_model("tiny-sd1"), " --from '", png.string(), "' ", input(), " -q -o '", (dir_ / "b.png").string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_png(png).pixels, read_png(dir_ / "b.png").pixels);
}

TEST_F(OtterImg2Img, ResizeResamplesAnotherSize) {
  // A 40x40 picture made 64x64 (the tiny model's size).
  std::vector<uint8_t> rgb(40 * 40 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>((i * 37) % 256);
  write_png(dir_ / "small.png", rgb.data(), 40, 40, {});
  const std::string base = cat(folder_model("tiny-sd1"), " --init-image '", (dir_ / "small.png").string(),
                               "' -p a --steps 2 -q -o '", (dir_ / "out.png").string(), "'");
  testing::OtterRun r = generate(base + " -W 64 -H 64");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "is 40x40 but -W/-H ask for 64x64: leave out -W/-H to keep the picture's size, or add "
                              "--resize")) << r.err;
  r = generate(base + " -W 64 -H 64 --resize");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_png(dir_ / "out.png").width, 64);
}

struct BadCase {
  std::string args, message;
};

TEST_F(OtterImg2Img, BadInputFailsCleanlyWithoutFiles) {
  std::vector<uint8_t> rgb(60 * 60 * 3, 128);
  write_png(dir_ / "sixty.png", rgb.data(), 60, 60, {});
  const fs::path not_png = dir_ / "notes.png";
  { std::ofstream(not_png) << "not a picture"; }
  const BadCase cases[] = {
      {input() + " --strength 1.5", "--strength must be in (0, 1], got 1.5"},
      {input() + " --strength 0", "--strength must be in (0, 1], got 0"},
      {input() + " --strength 0.05 --steps 10", "runs no denoising step"},
      {cat("--init-image '", not_png.string(), "'"), "is not a PNG file"},
      {cat("--init-image '", (dir_ / "sixty.png").string(), "'"), "its sides must be multiples of 8: add --resize -W 56 -H 56"},
      {input() + " -W 128", "but -W/-H ask for 128x64"},
      {"--resize", "--resize resamples an --init-image; there is none"},
  };
  const int before = files_written();
  for (const BadCase& c : cases) {
    const testing::OtterRun r = generate(cat(folder_model("tiny-sd1"), " -p a ", c.args, " -o '", (dir_ / "bad.png").string(), "'"));
    EXPECT_NE(r.status, 0) << c.args;
    EXPECT_TRUE(contains(r.err, c.message)) << c.args << ": " << r.err;
    EXPECT_EQ(files_written(), before) << c.args;
  }
}

}  // namespace
}  // namespace otter

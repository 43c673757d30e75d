// `otter generate --init-image --mask`: inpainting through the CLI against the diffusers goldens
// (tests/goldens/inpaint.*) for an ordinary and an inpainting model, the overlay (input bytes kept
// outside the mask), the PNG record and --from, and bad input refused with the fix and no file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/generation_parameters.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "run_otter.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/inpainting_model.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
using testing::contains;
const fs::path kGoldens = OTTER_PROJECT_GOLDEN_DIR;

class OtterInpaint : public testing::CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (!dir_.empty()) fs::create_directories(dir_ / "out");
  }
  fs::path inpainting_model() const { return testing::inpainting_model_folder(shared_, dir_); }
  static std::string inputs() {
    return cat("--init-image '", (kGoldens / "img2img_input.png").string(), "' --mask '", (kGoldens / "inpaint_mask.png").string(),
               "'");
  }
  int outputs() const {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_ / "out")) ++n;
    return n;
  }
  void expect_case(const fs::path& model, const std::string& id, const std::string& sampler, const std::string& configs = "") {
    const testing::Golden golden(kGoldens / "inpaint.json");
    const nlohmann::json& c = golden.case_by_id(id);
    const nlohmann::json& p = c["params"];
    const fs::path png = dir_ / "out" / "i.png", latents = dir_ / "i.safetensors";
    const testing::OtterRun r = testing::run_otter(
        cat("generate -m '", model.string(), "' ", configs, inputs(), " -p '", p["prompt"].get<std::string>(), "' --strength ",
            p["strength"].get<double>(), " --seed ", p["seed"].get<int>(), " --steps ", p["num_inference_steps"].get<int>(),
            " --sampler ", sampler, " --mask-blur 0 --precision f32 -q -o '", png.string(), "' --save-latents '",
            latents.string(), "'"));
    ASSERT_EQ(r.status, 0) << r.err;
    const Tensor want = golden.tensor(id + "/final_latents");
    EXPECT_LE(testing::max_abs_diff(SafetensorsFile::open(latents).tensor("final_latents"), want), 1e-4 * testing::max_abs(want))
        << id;
    // The file: the input's bytes where the mask keeps, diffusers' image (within a level) where it repaints.
    const PngImage out = read_png(png), input = read_png(kGoldens / "img2img_input.png"), mask = read_png(kGoldens / "inpaint_mask.png");
    const Tensor want_u8 = golden.tensor(id + "/image_uint8");
    int64_t kept = 0, painted = 0;
    for (size_t i = 0; i < out.pixels.size(); ++i) {
      const uint8_t* m = &mask.pixels[i / 3 * 3];
      const bool repaint = ((m[0] * 19595u + m[1] * 38470u + m[2] * 7471u + 0x8000u) >> 16) >= 128;
      if (repaint) {
        EXPECT_LE(std::abs(int(out.pixels[i]) - int(want_u8.data<uint8_t>()[i])), 1) << id << " " << i;
        ++painted;
      } else {
        EXPECT_EQ(out.pixels[i], input.pixels[i]) << id << " " << i;
        ++kept;
      }
    }
    EXPECT_GT(kept, 0);
    EXPECT_GT(painted, 0);
    fs::remove(png);
  }
};

TEST_F(OtterInpaint, CliMatchesDiffusersForBothKindsOfModel) {
  expect_case(shared_ / "models" / "tiny-sd1", "tiny-sd1/ddim_strength0.75", "ddim");
  expect_case(inpainting_model(), "tiny-sd1-inpaint/euler", "euler");
  std::string configs;
  for (const fs::path& c : testing::inpainting_model_configs(shared_)) configs += cat("--config '", c.string(), "' ");
  expect_case(testing::inpainting_model_file(shared_, dir_), "tiny-sd1-inpaint/ddim_strength0.6", "ddim", configs);
}

TEST_F(OtterInpaint, MaskIsRecordedAndFromNeedsIt) {
  const fs::path png = dir_ / "out" / "a.png";
  const std::string m = cat("-m '", (shared_ / "models" / "tiny-sd1").string(), "' ");
  testing::OtterRun r = testing::run_otter(cat("generate ", m, inputs(), " -p a --steps 4 --mask-blur 2.5 -q -o '", png.string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string text = read_png(png).find_text("parameters").value();
  EXPECT_TRUE(contains(text, "Mask blur: 2.5")) << text;
  EXPECT_TRUE(contains(text, "Mask: inpaint_mask.png")) << text;
  r = testing::run_otter(cat("generate ", m, " --from '", png.string(), "' --init-image '", (kGoldens / "img2img_input.png").string(),
                             "' -o '", (dir_ / "b.png").string(), "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "was inpainted with the mask inpaint_mask.png; give it with --mask")) << r.err;
  r = testing::run_otter(cat("generate ", m, " --from '", png.string(), "' ", inputs(), " -q -o '", (dir_ / "b.png").string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_png(png).pixels, read_png(dir_ / "b.png").pixels);
}

TEST_F(OtterInpaint, BadInputFailsCleanlyWithoutFiles) {
  std::vector<uint8_t> rgb(32 * 32 * 3, 255);
  write_png(dir_ / "small_mask.png", rgb.data(), 32, 32, {});
  { std::ofstream(dir_ / "notes.png") << "not a picture"; }
  const std::string tiny = cat("-m '", (shared_ / "models" / "tiny-sd1").string(), "' ");
  const std::string picture = cat("--init-image '", (kGoldens / "img2img_input.png").string(), "' ");
  const std::pair<std::string, std::string> cases[] = {
      {tiny + picture + cat("--mask '", (dir_ / "small_mask.png").string(), "'"),
       "is 32x32 but the picture is 64x64: give a mask of the picture's size, or add --resize"},
      {tiny + cat("--mask '", (kGoldens / "inpaint_mask.png").string(), "'"), "--mask says what to repaint in an --init-image"},
      {tiny + picture + cat("--mask '", (dir_ / "notes.png").string(), "'"), "is not a PNG file"},
      {tiny + inputs() + " --mask-blur 100", "--mask-blur must be in 0..64"},
      {cat("-m '", inpainting_model().string(), "' "), "this is an inpainting model"},
      {cat("-m '", (dir_ / "tiny-sd1-inpaint").string(), "' ") + picture, "give the picture with --init-image and what to repaint with --mask"},
  };
  for (const auto& [args, message] : cases) {
    const testing::OtterRun r = testing::run_otter(cat("generate ", args, " -p a --steps 2 -o '", (dir_ / "out" / "bad.png").string(), "'"));
    EXPECT_NE(r.status, 0) << args;
    EXPECT_TRUE(contains(r.err, message)) << args << ": " << r.err;
    EXPECT_EQ(outputs(), 0) << args;
  }
  // --resize resamples the mask with the picture.
  const testing::OtterRun r = testing::run_otter(cat("generate ", tiny, picture, "--mask '", (dir_ / "small_mask.png").string(),
                                                     "' --resize -p a --steps 2 -q -o '", (dir_ / "out" / "ok.png").string(), "'"));
  EXPECT_EQ(r.status, 0) << r.err;
}

}  // namespace
}  // namespace otter

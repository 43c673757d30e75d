// `otter generate --from IMAGE.png`: the image's parameters are the defaults of every option not
// given. The same command reproduces a single image byte for byte (PNG file included); an image of
// a batch gets its row of the batch's noise (the same initial noise exactly, the latents to float
// rounding of the batch size); options given on the command line win; bad sources fail clearly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "run_otter.h"
#include "support/compare.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
using testing::contains;

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class OtterFrom : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto shared = testing::shared_dir();
    if (!shared) GTEST_SKIP() << "reference data ../shared not found (set OTTER_SHARED_DIR)";
    model_ = cat("-m '", (*shared / "models" / "tiny-sd1").string(), "'");
    dir_ = fs::temp_directory_path() / cat("otter_from_", ::getpid(), "_",
                                           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string model_;
  fs::path dir_;
};

TEST_F(OtterFrom, ReproducesASingleImageByteForByte) {
  const struct {
    const char* options;
  } runs[] = {
      {"-n green --seed 3 --steps 6 --sampler euler --guidance 'pag:scale=5,pag_scale=2,layers=[mid,up.1]'"},
      {"--seed 4 --steps 5 --sampler ddim --eta 0.5 --cfg-schedule linear:9:2 --rescale 0.3 --clip-skip 2 -W 64 -H 128"},
      {"--seed 5 --steps 4 --sampler dpmpp_2m_karras --cfg-scale 6.3 --vae-tile --long-prompt chunk --precision f32"},
  };
  int i = 0;
  for (const auto& run : runs) {
    const std::string a = path(cat("a", i, ".png")), b = path(cat("b", i, ".png"));
    ++i;
    testing::OtterRun r = testing::run_otter(cat("generate ", model_, " -p 'a watercolor painting of an otter' ", run.options,
                                                 " -o '", a, "'"));
    ASSERT_EQ(r.status, 0) << r.err;
    r = testing::run_otter(cat("generate ", model_, " --from '", a, "' -o '", b, "'"));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(bytes_of(a), bytes_of(b)) << run.options;
  }
}

TEST_F(OtterFrom, AnImageOfABatchGetsItsRowOfTheBatchNoise) {
  const std::string a = path("a.png"), la = path("a.safetensors"), b = path("b.png"), lb = path("b.safetensors");
  testing::OtterRun r = testing::run_otter(cat("generate ", model_, " -p 'an otter' --seed 7 --steps 5 --sampler euler_a "
                                               "--images 3 --precision f32 -o '", a, "' --save-latents '", la, "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = testing::run_otter(cat("generate ", model_, " --from '", path("a-1.png"), "' -o '", b, "' --save-latents '", lb, "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  const SafetensorsFile batch = SafetensorsFile::open(la), one = SafetensorsFile::open(lb);
  EXPECT_EQ(testing::max_abs_diff(one.tensor("init_noise"), batch.tensor("init_noise").slice(0, 1, 2)), 0.0);
  const Tensor want = batch.tensor("final_latents").slice(0, 1, 2);
  EXPECT_LE(testing::max_abs_diff(one.tensor("final_latents"), want), 1e-5 * testing::max_abs(want));
  const PngImage png = read_png(b);
  EXPECT_TRUE(contains(png.find_text("parameters").value(), "Batch size: 3, Batch pos: 1"));
}

TEST_F(OtterFrom, GivenOptionsWin) {
  const std::string a = path("a.png"), b = path("b.png");
  testing::OtterRun r = testing::run_otter(
      cat("generate ", model_, " -p 'an otter' --seed 7 --steps 3 --images 2 --guidance apg:scale=5 -o '", a, "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = testing::run_otter(cat("generate ", model_, " --from '", path("a-0.png"), "' --seed 9 --cfg-scale 3 -o '", b, "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string params = read_png(b).find_text("parameters").value();
  EXPECT_TRUE(contains(params, "Steps: 3, Sampler: PLMS, CFG scale: 3, Seed: 9")) << params;
  EXPECT_FALSE(contains(params, "Batch")) << params;     // a new seed starts its own batch
  EXPECT_FALSE(contains(params, "Guidance")) << params;  // --cfg-scale chose classic CFG
}

TEST_F(OtterFrom, BadSourcesFailClearly) {
  const std::string a = path("a.png"), out = path("out.png");
  testing::OtterRun r = testing::run_otter(cat("generate ", model_, " -p x --steps 1 -o '", a, "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = testing::run_otter(cat("generate --from '", a, "' -o '", out, "'"));  // no -m: tiny-sd1 is not bundled
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "was made with the model 'tiny-sd1'; give its folder or file with -m")) << r.err;
  write_png(path("plain.png"), std::vector<uint8_t>(8 * 8 * 3, 0).data(), 8, 8, {});
  r = testing::run_otter(cat("generate ", model_, " --from '", path("plain.png"), "' -o '", out, "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "has no generation parameters")) << r.err;
  r = testing::run_otter(cat("generate ", model_, " -o '", out, "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "give a prompt with -p")) << r.err;
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace otter

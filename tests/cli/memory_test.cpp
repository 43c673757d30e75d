// The memory plan through `otter generate` on the bundled model: its estimate against the peak RSS
// the run measures (both printed in the log), absurd values refused while parsing, runs that cannot
// fit refused before any work, and images that fit only in turns run in turns with the same result.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>

#include "backend/backend.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "run_otter.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
using testing::contains;

class OtterMemory : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           cat("otter_mem_", ::getpid(), "_", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  int files_written() const {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++n;
    return n;
  }
  std::string out(const std::string& name) const { return cat(" -o '", (dir_ / name).string(), "'"); }
  fs::path dir_;
};

struct Timed {
  testing::OtterRun run;
  double seconds;
};
Timed timed_generate(const std::string& args) {
  const auto start = std::chrono::steady_clock::now();
  testing::OtterRun r = testing::run_otter("generate " + args);
  return {r, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
}

// "otter: memory: peak RSS 0.237 GB (estimated 0.244 GB)" -> {measured, estimated}.
std::pair<double, double> measured_and_estimated(const std::string& log) {
  static const std::regex line(R"(memory: peak RSS ([0-9.]+) GB \(estimated ([0-9.]+) GB\))");
  std::smatch m;
  if (!std::regex_search(log, m, line)) return {0, 0};
  return {std::stod(m[1]), std::stod(m[2])};
}

// The bundled model at several sizes and batches, one step each: the plan's estimate is within 15%
// of the peak RSS the run reaches (README, *Memory*, has the figures).
TEST_F(OtterMemory, EstimateIsWithinFifteenPercentOfMeasuredPeak) {
  std::vector<std::string> precisions{"f32"};
  if (cpu_features().avx512_bf16) precisions.push_back("bf16");
  // f16 arithmetic on AVX-512 FP16, f16 weights with f32 arithmetic on AVX2 + F16C.
  if (cpu_runs_precision(Precision::F16)) precisions.push_back("f16");
  const char* cases[] = {"-W 64 -H 64", "-W 256 -H 256", "-W 512 -H 512", "-W 256 -H 256 --images 4",
                         "-W 128 -H 192 --images 3 -p 'a blue square'", "-W 512 -H 512 --cfg-batch split"};
  for (const std::string& precision : precisions) {
    for (const char* c : cases) {
      const Timed t = timed_generate(cat("-p 'a red circle' --steps 1 --precision ", precision, " ", c, out("m.png")));
      ASSERT_EQ(t.run.status, 0) << c << ": " << t.run.err;
      const auto [measured, estimated] = measured_and_estimated(t.run.err);
      ASSERT_GT(measured, 0) << c << ": " << t.run.err;
      const double error = estimated / measured - 1;
      std::printf("[ info ] %s %s: peak RSS %.3f GB, estimated %.3f GB (%+.1f%%)\n", precision.c_str(), c, measured,
                  estimated, 100 * error);
      EXPECT_LE(std::abs(error), 0.15) << precision << " " << c << ": measured " << measured << " GB, estimated "
                                       << estimated << " GB";
    }
  }
}

// The issue's two commands: a typo in a size or a count ends at once, with the limit named.
TEST_F(OtterMemory, AbsurdValuesAreRefusedWhileParsing) {
  const struct {
    const char* args;
    const char* message;
  } cases[] = {
      {"-W 100000 -H 100000", "16384"},
      {"--images 100000", "4096"},
      {"--steps 20000", "10000"},
      {"-p b --images 3000", "at most 4096"},  // 2 prompts x 3000 images
      {"--max-batch 0", "--max-batch"},
      {"--memory-limit -1", "--memory-limit"},
  };
  for (const auto& c : cases) {
    // Under a small --memory-limit, so a check that let one through could not take the machine down.
    const Timed t = timed_generate(cat("-p x --memory-limit 1 ", c.args, out("x.png")));
    EXPECT_NE(t.run.status, 0) << c.args;
    EXPECT_TRUE(contains(t.run.err, c.message)) << c.args << ": " << t.run.err;
    EXPECT_LT(t.seconds, 2.0) << c.args;
    EXPECT_EQ(files_written(), 0) << c.args;
  }
}

// What fits in no way is refused before any work, naming the estimate, the budget and what would fit.
TEST_F(OtterMemory, RunThatCannotFitIsRefusedWithWhatWouldFit) {
  const Timed t = timed_generate(cat("-p x -W 16384 -H 16384 --memory-limit 1", out("x.png")));
  EXPECT_EQ(t.run.status, 1) << t.run.err;
  EXPECT_TRUE(contains(t.run.err, "otter: error: not enough memory for this run: it needs an estimated ")) << t.run.err;
  EXPECT_TRUE(contains(t.run.err, "available: 1.00 GB (--memory-limit 1 GB)")) << t.run.err;
  EXPECT_TRUE(contains(t.run.err, "What would fit: -W ")) << t.run.err;
  EXPECT_LT(t.seconds, 2.0);
  EXPECT_EQ(files_written(), 0);

  // At 1024x1024 in f32 the whole decode does not fit 0.6 GB, a tiled one does (f32: the 16-bit
  // paths need less, and which one runs depends on the CPU).
  const Timed tile =
      timed_generate(cat("-p x -W 1024 -H 1024 --precision f32 --vae-memory-limit 100 --memory-limit 0.6", out("x.png")));
  EXPECT_EQ(tile.run.status, 1) << tile.run.err;
  EXPECT_TRUE(contains(tile.run.err, "--vae-tile (")) << tile.run.err;
  EXPECT_EQ(files_written(), 0);
}

// Images that fit only a few at a time run in turns, automatically or by --max-batch, and give the
// same files as one batch (euler_a: the ancestral noise of each turn is its rows of the batch's).
TEST_F(OtterMemory, ImagesRunInTurnsWhenTheyDoNotFitAtOnce) {
  const std::string common = "-p 'a red circle' -p 'a green square' --images 3 --steps 3 --sampler euler_a --seed 7 -W 256 -H 256 --precision f32";
  const Timed whole = timed_generate(cat(common, out("whole.png")));
  ASSERT_EQ(whole.run.status, 0) << whole.run.err;
  const Timed turns = timed_generate(cat(common, " --max-batch 4", out("turns.png")));
  ASSERT_EQ(turns.run.status, 0) << turns.run.err;
  EXPECT_TRUE(contains(turns.run.err, "turn 2/2 ")) << turns.run.err;
  // An automatic choice under a limit the six images at once exceed.
  const auto [measured, whole_estimate] = measured_and_estimated(whole.run.err);
  const Timed automatic =
      timed_generate(cat(common, " --memory-limit ", whole_estimate * 0.8, out("auto.png")));
  ASSERT_EQ(automatic.run.status, 0) << automatic.run.err;
  EXPECT_TRUE(contains(automatic.run.err, "running the 6 images in turns of ")) << automatic.run.err;
  for (int i = 0; i < 6; ++i) {
    const std::string expected = testing::slurp(dir_ / cat("whole-", i, ".png"));
    ASSERT_FALSE(expected.empty());
    EXPECT_EQ(testing::slurp(dir_ / cat("turns-", i, ".png")), expected) << "image " << i << " (--max-batch 4)";
    EXPECT_EQ(testing::slurp(dir_ / cat("auto-", i, ".png")), expected) << "image " << i << " (automatic turns)";
  }
}

}  // namespace
}  // namespace otter

// A guidance interval from the CLI on the bundled model (DDIM, an alpha-space sampler): the uncond
// rows are evaluated exactly at the steps whose sigma, computed here independently from the model's
// scaled-linear schedule, lies in (0.28, 5.42].
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "run_otter.h"

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

}  // namespace
}  // namespace otter

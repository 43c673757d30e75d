// Txt2ImgResult::step_seconds holds one wall time per evaluation, turn after turn, and its median
// is the steady step the CLI logs beside otter-bench's CFG step (and its fastest, otter-bench's
// kind of figure: a best of runs).
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "pipeline/txt2img.h"
#include "support/shared_data.h"

namespace otter {
namespace {

TEST(StepTimes, MedianOfOddAndEvenCounts) {
  Txt2ImgResult r;
  EXPECT_EQ(r.median_step_seconds(), 0.0);
  r.step_seconds = {3.0, 0.5, 1.0};  // a slow first step (weight preparation) does not move it
  EXPECT_EQ(r.median_step_seconds(), 1.0);
  r.step_seconds = {4.0, 1.0, 2.0, 3.0};
  EXPECT_EQ(r.median_step_seconds(), 2.5);
}

TEST(StepTimes, FastestStep) {
  Txt2ImgResult r;
  EXPECT_EQ(r.fastest_step_seconds(), 0.0);
  r.step_seconds = {3.0, 0.5, 1.0};
  EXPECT_EQ(r.fastest_step_seconds(), 0.5);
}

TEST(StepTimes, OneTimePerEvaluationInEveryTurn) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  Txt2ImgRequest r;
  r.prompts = {"an otter"};
  r.images_per_prompt = 2;
  r.width = r.height = 64;
  r.steps = 3;
  r.sampler = "heun";  // two evaluations per step but the last
  r.max_batch = 1;     // two turns
  const Txt2ImgResult result = txt2img(*model, r);
  EXPECT_EQ(result.turns, 2);
  ASSERT_EQ(result.step_seconds.size(), 2u * static_cast<size_t>(result.evaluations));
  for (double s : result.step_seconds) EXPECT_GT(s, 0.0);
  EXPECT_GT(result.median_step_seconds(), 0.0);
  EXPECT_GT(result.fastest_step_seconds(), 0.0);
  EXPECT_LE(result.fastest_step_seconds(), result.median_step_seconds());
}

}  // namespace
}  // namespace otter

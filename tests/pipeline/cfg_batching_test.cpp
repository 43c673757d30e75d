// The batching contract of classifier-free guidance with the real UNet: scale 1 evaluates half the
// UNet rows of scale 7.5 (the uncond rows are skipped), and `--cfg-batch split` (two calls of B rows)
// gives exactly the batched result (one call of 2B rows).
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"
#include "support/shared_data.h"

namespace otter {
namespace {

Txt2ImgRequest small_request(float scale) {
  Txt2ImgRequest r;
  r.prompts = {"a watercolor painting of an otter", "a photo of a red fox"};
  r.images_per_prompt = 2;
  r.width = r.height = 64;
  r.steps = 6;
  r.sampler = "euler";
  r.seed = 7;
  r.guidance.schedule = GuidanceSchedule::constant(scale);
  return r;
}

TEST(CfgBatching, ScaleOneEvaluatesHalfTheRows) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  const Txt2ImgResult guided = txt2img(*model, small_request(7.5f));
  const Txt2ImgResult plain = txt2img(*model, small_request(1.0f));
  EXPECT_EQ(guided.unet_rows, 6u * 2u * 4u);  // 6 steps x [4 uncond + 4 cond] rows
  EXPECT_EQ(plain.unet_rows, 6u * 4u);        // 6 steps x 4 cond rows
  EXPECT_EQ(2 * plain.unet_rows, guided.unet_rows);
  EXPECT_EQ(plain.skipped_uncond_steps, 6u);
}

TEST(CfgBatching, SplitEqualsBatched) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  for (const char* name : {"tiny-sd1", "tiny-sd2"}) {
    auto model = StableDiffusion::load(shared / "models" / name, *backend);
    Txt2ImgRequest batched = small_request(7.5f), split = small_request(7.5f);
    split.guidance.batching = CfgBatching::Split;
    const Txt2ImgResult a = txt2img(*model, batched), b = txt2img(*model, split);
    EXPECT_EQ(testing::max_abs_diff(a.final_latents, b.final_latents), 0.0) << name;
    EXPECT_EQ(a.unet_rows, b.unet_rows) << name;
  }
}

}  // namespace
}  // namespace otter

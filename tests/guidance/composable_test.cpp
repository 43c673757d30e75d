// Composable prompts: the webui's AND syntax, the combination against a naive implementation
// (rows counted through the denoiser, each sub-prompt row paired with its image's latents and its
// own text), and on tiny-sd1 the closed form "a cat :0.5 AND a cat :0.5" = "a cat".
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "core/error.h"
#include "guidance/composable_guidance.h"
#include "guidance/composable_prompt.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"
#include "support/shared_data.h"

namespace otter {
namespace {

using testing::random_normal_tensor;

TEST(ComposablePrompt, SplitsAtAndWithWeightsAsTheWebui) {
  const auto parts = split_composable_prompt("a red circle AND a blue square :0.6");
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].text, "a red circle");
  EXPECT_EQ(parts[0].weight, 1.0);
  EXPECT_EQ(parts[1].text, " a blue square");  // the webui keeps the leading space; the tokenizer drops it
  EXPECT_EQ(parts[1].weight, 0.6);
  const auto three = split_composable_prompt("a AND b:2 AND c : -1.5");
  ASSERT_EQ(three.size(), 3u);
  EXPECT_EQ(three[1].text, " b");
  EXPECT_EQ(three[1].weight, 2.0);
  EXPECT_EQ(three[2].weight, -1.5);
  EXPECT_TRUE(is_composable(three));
  // Not AND: inside a word, lower case; not a weight: a word after the colon.
  for (const char* plain : {"ANDROID dreams", "cats and dogs", "a clock at 10:30 am", "ratio :x"}) {
    const auto p = split_composable_prompt(plain);
    ASSERT_EQ(p.size(), 1u) << plain;
    EXPECT_EQ(p[0].text, plain);
    EXPECT_FALSE(is_composable(p)) << plain;
  }
  const auto weighted = split_composable_prompt("a cat :1.5");
  EXPECT_EQ(weighted[0].text, "a cat");
  EXPECT_TRUE(is_composable(weighted));
}

TEST(ComposableGuidance, SumsEachSubPromptsDirectionInOneCall) {
  const int64_t B = 2;
  const Tensor uncond = random_normal_tensor(Shape{B, 77, 8}, 1);
  const Tensor conds = random_normal_tensor(Shape{3, 77, 8}, 2);
  const std::vector<int64_t> image_of{0, 0, 1};
  const std::vector<double> weights{1.0, 0.6, -0.5};
  const auto mean_of = [](const Tensor& t, int64_t b) {
    const int64_t n = t.numel() / t.dim(0);
    double m = 0;
    for (int64_t i = 0; i < n; ++i) m += t.contiguous().f32()[b * n + i];
    return static_cast<float>(m / static_cast<double>(n));
  };
  for (CfgBatching batching : {CfgBatching::Batched, CfgBatching::Split}) {
    GuidanceOptions options;
    options.schedule = GuidanceSchedule::parse("linear:9:1");
    options.batching = batching;
    ComposableGuidance guidance(uncond, conds, image_of, weights, options);
    uint64_t rows = 0;
    // A fake UNet: each output row is its latent row plus the mean of its text row.
    const Denoiser model = [&](const Tensor& x, float, const Tensor& context, const RowPerturbation*) {
      rows += static_cast<uint64_t>(x.dim(0));
      Tensor out = x.contiguous().clone();
      const int64_t per = out.numel() / out.dim(0);
      for (int64_t b = 0; b < out.dim(0); ++b)
        for (int64_t i = 0; i < per; ++i) out.f32()[b * per + i] += mean_of(context, b);
      return out;
    };
    const Tensor x = random_normal_tensor(Shape{B, 4, 4, 4}, 3);
    const int steps = 4;
    for (int s = 0; s < steps; ++s) {
      const Tensor pred = guidance.predict(model, x, 999.0f - s, s, steps);
      const double scale = options.schedule.at(s, steps);
      const int64_t per = x.numel() / B;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < per; ++i) {
          const float u = x.f32()[b * per + i] + mean_of(uncond, b);
          float want = u;
          for (size_t r = 0; r < image_of.size(); ++r) {
            if (image_of[r] != b) continue;
            const float c = x.f32()[b * per + i] + mean_of(conds, static_cast<int64_t>(r));
            want += (c - u) * static_cast<float>(weights[r] * scale);
          }
          ASSERT_EQ(pred.f32()[b * per + i], want) << "step " << s << " image " << b;
        }
    }
    EXPECT_EQ(rows, static_cast<uint64_t>(steps * (B + 3)));
    EXPECT_EQ(guidance.unet_rows(), rows);
  }
  GuidanceOptions rescaled;
  rescaled.rescale = 0.7f;
  EXPECT_THROW(ComposableGuidance(uncond, conds, image_of, weights, rescaled), Error);
}

TEST(ComposableGuidance, TwoHalvesOfOnePromptAreThePrompt) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  Txt2ImgRequest r;
  r.width = r.height = 64;
  r.steps = 6;
  r.seed = 3;
  r.sampler = "euler_a";
  r.decode = false;
  r.prompts = {"a watercolor painting of an otter"};
  const Txt2ImgResult plain = txt2img(*model, r);
  r.prompts = {"a watercolor painting of an otter :0.5 AND a watercolor painting of an otter :0.5"};
  const Txt2ImgResult halves = txt2img(*model, r);
  EXPECT_EQ(halves.unet_rows, 6u * 3u);  // uncond + 2 sub-prompts per step
  EXPECT_LE(testing::max_abs_diff(halves.final_latents, plain.final_latents), 1e-5 * testing::max_abs(plain.final_latents));
  r.guider = GuidanceRecipe::parse("apg");
  EXPECT_THROW((void)txt2img(*model, r), Error);
}

}  // namespace
}  // namespace otter

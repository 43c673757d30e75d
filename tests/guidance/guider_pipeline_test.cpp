// Guiders in the denoising loop: the recipe syntax, the rows a guider asks for are exactly the rows
// the UNet evaluates (counted through the denoiser), and through txt2img the CFG guider is classic
// CFG bit for bit and APG with eta = 1, no threshold and no momentum is CFG up to rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "backend/backend.h"
#include "core/error.h"
#include "guidance/guidance_recipe.h"
#include "guidance/guider_prediction.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"
#include "support/shared_data.h"

namespace otter {
namespace {

using testing::random_normal_tensor;

TEST(GuidanceRecipe, ParsesAliasesAndWritesCanonicalText) {
  const GuidanceRecipe r = GuidanceRecipe::parse(" apg : scale=5, eta=0 ,norm_threshold=8,momentum=-0.5,norm_dim=[1]");
  EXPECT_EQ(r.method, "apg");
  EXPECT_EQ(r.params["guidance_scale"], 5);
  EXPECT_EQ(r.params["adaptive_projected_guidance_rescale"], 8);
  EXPECT_EQ(r.params["adaptive_projected_guidance_momentum"], -0.5);
  EXPECT_EQ(r.params["adaptive_projected_guidance_norm_dim"], nlohmann::json::array({1}));
  const std::string text = r.to_string();
  EXPECT_EQ(text,
            "apg:adaptive_projected_guidance_momentum=-0.5,adaptive_projected_guidance_norm_dim=[1],"
            "adaptive_projected_guidance_rescale=8,eta=0,guidance_scale=5");
  const GuidanceRecipe again = GuidanceRecipe::parse(text);
  EXPECT_EQ(again.params, r.params);
  EXPECT_EQ(GuidanceRecipe::parse("ClassifierFreeGuidance").to_string(), "ClassifierFreeGuidance");
  EXPECT_EQ(GuidanceRecipe::parse("cfg:original=true").params["use_original_formulation"], true);
}

TEST(GuidanceRecipe, IntervalModifier) {
  const GuidanceRecipe r = GuidanceRecipe::parse("apg:scale=5 ; interval=0.28..5.42");
  ASSERT_TRUE(r.interval.has_value());
  EXPECT_EQ(r.interval->first, 0.28);
  EXPECT_EQ(r.interval->second, 5.42);
  EXPECT_EQ(r.to_string(), "apg:guidance_scale=5;interval=0.28..5.42");
  EXPECT_EQ(GuidanceRecipe::parse(r.to_string()).interval, r.interval);
}

TEST(GuidanceRecipe, BadRecipesSayWhatIsWrong) {
  const struct {
    const char* recipe;
    const char* message;
  } cases[] = {
      {"foo:scale=1", "unknown guider 'foo'"},
      {"apg:sigma=3", "AdaptiveProjectedGuidance has no parameter sigma"},
      {"cfg:scale=high", "is not a number"},
      {"apg:scale=2e3805", "is not a number"},  // beyond a double: JSON's out_of_range (found by fuzzing)
      {"cfg:scale", "is not NAME=VALUE"},
      {"cfg:scale=1,scale=2", "twice"},
      {"cfg:start=0.8,stop=0.2", "start <= stop"},
      {"apg;interval=0.3", "interval must be LO..HI"},
      {"apg;interval=5..1", "0 <= LO < HI"},
      {"apg;sigma=1", "unknown modifier"},
      {"apg;adaptive=high", "cosine threshold"},
  };
  for (const auto& c : cases) {
    try {
      (void)GuidanceRecipe::parse(c.recipe);
      ADD_FAILURE() << c.recipe << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.recipe << ": " << e.what();
    }
  }
}

// The rows a guider asks for are the rows evaluated: counted in the denoiser itself.
TEST(GuiderPrediction, EvaluatesExactlyTheRowsItReports) {
  for (CfgBatching batching : {CfgBatching::Batched, CfgBatching::Split}) {
    const int64_t B = 3;
    const Tensor uncond = random_normal_tensor(Shape{B, 77, 8}, 1), cond = random_normal_tensor(Shape{B, 77, 8}, 2);
    GuiderPrediction guidance(uncond, cond, GuidanceRecipe::parse("cfg:scale=5,start=0.25,stop=0.75").make(),
                              batching);
    uint64_t rows = 0, calls = 0;
    const Denoiser model = [&](const Tensor& x, float, const Tensor& context, const RowPerturbation*) {
      EXPECT_EQ(x.dim(0), context.dim(0));
      rows += static_cast<uint64_t>(x.dim(0));
      ++calls;
      return x.clone();
    };
    const Tensor x = random_normal_tensor(Shape{B, 4, 8, 8}, 3);
    const int steps = 8;
    for (int s = 0; s < steps; ++s) (void)guidance.predict(model, x, 999.0f - s, s, steps);
    // Steps 2..5 guided (2B rows), the other 4 cond only (B rows).
    EXPECT_EQ(rows, static_cast<uint64_t>(4 * 2 * B + 4 * B));
    EXPECT_EQ(guidance.unet_rows(), rows);
    EXPECT_EQ(guidance.skipped_uncond_steps(), 4u);
    EXPECT_EQ(calls, batching == CfgBatching::Batched ? 8u : 12u);
  }
}

// Perturbed guiders: a fake UNet marks each row with its context row's mean plus 100 when the
// row is perturbed, so the test sees which rows were evaluated, with which text and which rows
// carried the perturbation; the guided prediction must be the guider's formula on those rows.
TEST(GuiderPrediction, PerturbedRowsAreEvaluatedInTheSameCallWithTheCondText) {
  const int64_t B = 2;
  const Tensor uncond = random_normal_tensor(Shape{B, 77, 8}, 7), cond = random_normal_tensor(Shape{B, 77, 8}, 8);
  const std::vector<std::string> blocks{"down_blocks.0.attentions.0.transformer_blocks.0",
                                        "mid_block.attentions.0.transformer_blocks.0"};
  const auto mean_of = [](const Tensor& t, int64_t b) {
    const int64_t n = t.numel() / t.dim(0);
    double m = 0;
    for (int64_t i = 0; i < n; ++i) m += t.contiguous().f32()[b * n + i];
    return static_cast<float>(m / static_cast<double>(n));
  };
  struct Case {
    const char* recipe;
    int steps;
    std::vector<int> rows_per_step;  // groups per step: 1 + uncond + perturbed
    bool perturb_uncond;
  };
  const Case cases[] = {
      // 10 steps: perturbed on 1 (int(0.01·10) = 0 < i < int(0.2·10) = 2), CFG everywhere.
      {"PerturbedAttentionGuidance:layers=mid", 10, {2, 3, 2, 2, 2, 2, 2, 2, 2, 2}, false},
      {"seg:scale=1,seg_guidance_scale=2,layers=[0]", 4, {1, 2, 2, 2}, false},
      {"slg:skip_layer_guidance_start=0,skip_layer_guidance_stop=1,start=0.5", 4, {1, 2, 3, 3}, false},
      {"pag:scale=4,pag_scale=2", 3, {3, 3, 3}, false},
      {"autoguidance:scale=3,layers=mid", 3, {2, 2, 2}, true},
  };
  for (const Case& c : cases)
    for (CfgBatching batching : {CfgBatching::Batched, CfgBatching::Split}) {
      const GuidanceRecipe recipe = GuidanceRecipe::parse(c.recipe);
      GuiderPrediction guidance(uncond, cond, recipe.make(), batching, blocks);
      std::unique_ptr<Guider> twin = recipe.make();  // the same guider fed the expected predictions
      uint64_t rows = 0;
      const Denoiser model = [&](const Tensor& x, float, const Tensor& context, const RowPerturbation* p) {
        rows += static_cast<uint64_t>(x.dim(0));
        if (p) {
          EXPECT_EQ(p->blocks, recipe.method == "seg" ? std::vector<int>{0} : std::vector<int>{1}) << c.recipe;
        }
        Tensor out = x.clone();
        const int64_t per = out.numel() / out.dim(0);
        for (int64_t b = 0; b < out.dim(0); ++b) {
          const float mark = mean_of(context, b) + (p && b >= p->row_begin && b < p->row_end ? 100.0f : 0.0f);
          for (int64_t i = 0; i < per; ++i) out.f32()[b * per + i] += mark;
        }
        return out;
      };
      const Tensor x = random_normal_tensor(Shape{B, 4, 4, 4}, 9);
      uint64_t expected_rows = 0;
      for (int s = 0; s < c.steps; ++s) {
        expected_rows += static_cast<uint64_t>(c.rows_per_step[static_cast<size_t>(s)] * B);
        const GuiderStep step{s, c.steps, 999.0f - s};
        const Needs needs = twin->needs(step);
        ASSERT_EQ(1 + needs.uncond + needs.perturbed, c.rows_per_step[static_cast<size_t>(s)]) << c.recipe << " step " << s;
        // What the rows must hold: x + mean(text row) (+100 where perturbed).
        Predictions want;
        const auto expected = [&](const Tensor& text, bool perturbed) {
          Tensor out = x.clone();
          const int64_t per = out.numel() / B;
          for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < per; ++i) out.f32()[b * per + i] += mean_of(text, b) + (perturbed ? 100.0f : 0.0f);
          return out;
        };
        want.cond = expected(cond, false);
        if (needs.uncond) want.uncond = expected(uncond, c.perturb_uncond);
        if (needs.perturbed) want.perturbed = expected(cond, true);
        const Tensor pred = guidance.predict(model, x, 999.0f - s, s, c.steps);
        EXPECT_EQ(testing::max_abs_diff(pred, twin->combine(step, want)), 0.0) << c.recipe << " step " << s;
      }
      EXPECT_EQ(rows, expected_rows) << c.recipe;
      EXPECT_EQ(guidance.unet_rows(), expected_rows) << c.recipe;
    }
}

// A guidance interval against a naive implementation: inside (lo, hi] the CFG formula on the two
// predictions, outside the cond prediction alone, with only the rows that needs.
TEST(GuiderPrediction, IntervalGuidesOnlyInsideItsSigmas) {
  const int64_t B = 2;
  const Tensor uncond = random_normal_tensor(Shape{B, 77, 8}, 4), cond = random_normal_tensor(Shape{B, 77, 8}, 5);
  GuiderPrediction guidance(uncond, cond, GuidanceRecipe::parse("cfg:scale=6;interval=0.5..3").make(),
                            CfgBatching::Batched);
  uint64_t rows = 0;
  // A fake UNet whose output depends on the text row: x + mean of the context row.
  const Denoiser model = [&](const Tensor& x, float, const Tensor& context, const RowPerturbation*) {
    rows += static_cast<uint64_t>(x.dim(0));
    Tensor out = x.clone();
    const int64_t per = out.numel() / out.dim(0), ctx = context.numel() / context.dim(0);
    for (int64_t b = 0; b < out.dim(0); ++b) {
      double mean = 0;
      for (int64_t i = 0; i < ctx; ++i) mean += context.f32()[b * ctx + i];
      for (int64_t i = 0; i < per; ++i) out.f32()[b * per + i] += static_cast<float>(mean / ctx);
    }
    return out;
  };
  const Tensor x = random_normal_tensor(Shape{B, 4, 4, 4}, 6);
  const Tensor u = model(x, 0, uncond, nullptr), c = model(x, 0, cond, nullptr);
  rows = 0;
  const float sigmas[] = {14.6f, 3.0f, 2.9f, 1.0f, 0.5f, 0.1f};
  uint64_t expected_rows = 0;
  for (int k = 0; k < 6; ++k) {
    const bool inside = sigmas[k] > 0.5f && sigmas[k] <= 3.0f;
    expected_rows += static_cast<uint64_t>(inside ? 2 * B : B);
    const Tensor pred = guidance.predict(model, x, 999.0f - k, k, 6, sigmas[k]);
    for (int64_t i = 0; i < pred.numel(); ++i) {
      const float want = inside ? u.f32()[i] + 6.0f * (c.f32()[i] - u.f32()[i]) : c.f32()[i];
      ASSERT_EQ(pred.f32()[i], want) << "sigma " << sigmas[k] << " element " << i;
    }
  }
  EXPECT_EQ(rows, expected_rows);
  EXPECT_EQ(guidance.unet_rows(), expected_rows);
  EXPECT_EQ(guidance.skipped_uncond_steps(), 3u);
}

// Adaptive skipping against a naive implementation: a fake UNet whose cond and uncond outputs
// converge as the timestep falls; from the step after the smallest cosine over the batch first
// reaches the threshold, only cond rows are evaluated and the prediction is cond.
TEST(GuiderPrediction, AdaptiveSkippingStopsOnceCondAndUncondAgree) {
  const GuidanceRecipe recipe = GuidanceRecipe::parse("cfg:scale=5;adaptive=0.995");
  EXPECT_EQ(recipe.to_string(), "cfg:guidance_scale=5;adaptive=0.995");
  const int64_t B = 2;
  const Tensor uncond = random_normal_tensor(Shape{B, 77, 8}, 7), cond = random_normal_tensor(Shape{B, 77, 8}, 8);
  GuiderPrediction guidance(uncond, cond, recipe.make(), CfgBatching::Batched);
  uint64_t rows = 0;
  const Denoiser model = [&](const Tensor& x, float t, const Tensor& context, const RowPerturbation*) {
    rows += static_cast<uint64_t>(x.dim(0));
    Tensor out = x.clone();
    const int64_t per = out.numel() / out.dim(0), ctx = context.numel() / context.dim(0);
    for (int64_t b = 0; b < out.dim(0); ++b)
      for (int64_t i = 0; i < per; ++i) out.f32()[b * per + i] += context.f32()[b * ctx + i % ctx] * t / 1000.0f;
    return out;
  };
  const Tensor x = random_normal_tensor(Shape{B, 4, 4, 4}, 9);
  const int steps = 10;
  bool stopped = false;
  uint64_t expected_rows = 0;
  for (int k = 0; k < steps; ++k) {
    const float t = 1000.0f * std::pow(0.5f, static_cast<float>(k));  // cond and uncond converge
    const Tensor u = model(x, t, uncond, nullptr), c = model(x, t, cond, nullptr);
    rows = 0;
    const Tensor pred = guidance.predict(model, x, t, k, steps, NAN);
    expected_rows += static_cast<uint64_t>(stopped ? B : 2 * B);
    for (int64_t i = 0; i < pred.numel(); ++i) {
      const float want = stopped ? c.f32()[i] : u.f32()[i] + 5.0f * (c.f32()[i] - u.f32()[i]);
      ASSERT_EQ(pred.f32()[i], want) << "step " << k;
    }
    if (!stopped) {  // the naive rule: smallest per-image cosine >= 0.995 stops the following steps
      const int64_t n = c.numel() / B;
      double smallest = 1;
      for (int64_t b = 0; b < B; ++b) {
        double cu = 0, cc = 0, uu = 0;
        for (int64_t i = 0; i < n; ++i) {
          cu += double(c.f32()[b * n + i]) * u.f32()[b * n + i];
          cc += double(c.f32()[b * n + i]) * c.f32()[b * n + i];
          uu += double(u.f32()[b * n + i]) * u.f32()[b * n + i];
        }
        smallest = std::min(smallest, cu / std::sqrt(cc * uu));
      }
      stopped = smallest >= 0.995;
    }
  }
  EXPECT_TRUE(stopped) << "the fake predictions should agree before the end";
  EXPECT_EQ(guidance.unet_rows(), expected_rows);
  EXPECT_GT(guidance.skipped_uncond_steps(), 0u);
  EXPECT_LT(guidance.skipped_uncond_steps(), static_cast<uint64_t>(steps));
}

Txt2ImgRequest request(const char* recipe) {
  Txt2ImgRequest r;
  r.prompts = {"a watercolor painting of an otter", "a photo of a red fox"};
  r.images_per_prompt = 2;
  r.width = r.height = 64;
  r.steps = 5;
  r.sampler = "euler_a";
  r.seed = 3;
  r.guidance.schedule = GuidanceSchedule::constant(7.5f);
  if (recipe) r.guider = GuidanceRecipe::parse(recipe);
  return r;
}

TEST(GuiderPipeline, CfgGuiderIsClassicCfgAndApgReducesToIt) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  const Txt2ImgResult classic = txt2img(*model, request(nullptr));
  const Txt2ImgResult cfg = txt2img(*model, request("cfg:scale=7.5"));
  ASSERT_EQ(cfg.final_latents.nbytes(), classic.final_latents.nbytes());
  EXPECT_EQ(std::memcmp(cfg.final_latents.raw(), classic.final_latents.raw(), classic.final_latents.nbytes()), 0);
  EXPECT_EQ(cfg.unet_rows, classic.unet_rows);

  const Txt2ImgResult apg = txt2img(*model, request("apg:scale=7.5,eta=1,norm_threshold=0"));
  double max_rel = 0, scale = 0;
  for (int64_t i = 0; i < classic.final_latents.numel(); ++i) {
    scale = std::max(scale, static_cast<double>(std::fabs(classic.final_latents.f32()[i])));
    max_rel = std::max(max_rel, static_cast<double>(std::fabs(apg.final_latents.f32()[i] - classic.final_latents.f32()[i])));
  }
  EXPECT_LE(max_rel / scale, 1e-5) << "APG with eta 1, no threshold, no momentum should be CFG";
}

// Through txt2img: an interval holding every sigma is plain CFG; one holding none is the cond
// prediction alone (classic CFG at scale 1), with half the rows. Both bit for bit.
TEST(GuiderPipeline, IntervalBoundsGiveCfgOrNoGuidance) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  const auto same = [](const Txt2ImgResult& a, const Txt2ImgResult& b) {
    return a.final_latents.nbytes() == b.final_latents.nbytes() &&
           std::memcmp(a.final_latents.raw(), b.final_latents.raw(), a.final_latents.nbytes()) == 0;
  };
  for (const char* sampler : {"euler_a", "ddim"}) {
    Txt2ImgRequest cfg = request("cfg:scale=7.5"), all = request("cfg:scale=7.5;interval=0..100000"),
                   none = request("cfg:scale=7.5;interval=100000..200000"), plain = request(nullptr);
    cfg.sampler = all.sampler = none.sampler = plain.sampler = sampler;
    plain.guidance.schedule = GuidanceSchedule::constant(1.0f);
    const Txt2ImgResult r_cfg = txt2img(*model, cfg), r_all = txt2img(*model, all);
    const Txt2ImgResult r_none = txt2img(*model, none), r_plain = txt2img(*model, plain);
    EXPECT_TRUE(same(r_all, r_cfg)) << sampler;
    EXPECT_TRUE(same(r_none, r_plain)) << sampler;
    EXPECT_EQ(r_none.unet_rows * 2, r_cfg.unet_rows) << sampler;
  }
}

}  // namespace
}  // namespace otter

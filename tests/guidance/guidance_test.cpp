// Classifier-free guidance: the formula against diffusers' recorded UNet outputs and guided
// predictions, the batching contract ([uncond, cond] in one call; split equals batched; s = 1
// evaluates half the rows), and the scale schedules.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "guidance/classifier_free_guidance.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

using testing::random_normal_tensor;

// For every pipeline case with CFG, diffusers' guided prediction noise_pred[k] must follow from its
// raw UNet output unet_out[k] (uncond rows first) by our formula, rescale included.
TEST(GuidanceGolden, FormulaReproducesDiffusersNoisePred) {
  OTTER_REQUIRE_SHARED(shared);
  int checked = 0;
  for (const char* model : {"tiny-sd1", "tiny-sd2"}) {
    testing::Golden golden(shared / "golden" / (std::string(model) + "_pipelines.json"));
    for (const auto& c : golden.manifest()["cases"]) {
      if (!c["do_cfg"].get<bool>()) continue;
      const float scale = c["params"]["guidance_scale"].get<float>();
      const float rescale = c["params"]["guidance_rescale"].get<float>();
      const Tensor unet_out = golden.tensor_ref(c["tensors"]["unet_out"]);
      const Tensor noise_pred = golden.tensor_ref(c["tensors"]["noise_pred"]);
      const int64_t S = unet_out.dim(0), B2 = unet_out.dim(1), B = B2 / 2;
      for (int64_t k = 0; k < S; ++k) {
        const Tensor step = unet_out.slice(0, k, k + 1).squeeze_front();
        const Tensor eps = combine_guidance(step.slice(0, 0, B), step.slice(0, B, B2), scale, rescale);
        const Tensor want = noise_pred.slice(0, k, k + 1).squeeze_front().contiguous();
        // float32 rounding of the same formula; the rescale's std is computed in double here.
        EXPECT_LE(testing::max_abs_diff(eps, want), 2e-6 * std::max(1.0, testing::max_abs(want)))
            << model << " " << c["id"].get<std::string>() << " step " << k;
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 17);
}

TEST(Guidance, FormulaSpecialScales) {
  const Tensor u = random_normal_tensor(Shape{2, 4, 3, 3}, 1), c = random_normal_tensor(Shape{2, 4, 3, 3}, 2);
  EXPECT_EQ(testing::max_abs_diff(combine_guidance(u, c, 0.0f, 0.0f), u), 0.0);  // s = 0: uncond
  // s = 1: cond, up to the rounding of u + (c - u) (the pipeline skips the uncond rows instead).
  EXPECT_LE(testing::max_abs_diff(combine_guidance(u, c, 1.0f, 0.0f), c), 1e-6 * testing::max_abs(c));
  const Tensor neg = combine_guidance(u, c, -3.0f, 0.0f);                      // s < 0: away from the prompt
  for (int64_t i = 0; i < u.numel(); ++i)
    EXPECT_NEAR(neg.f32()[i], u.f32()[i] - 3.0 * (c.f32()[i] - u.f32()[i]), 1e-5);
}

TEST(Guidance, RescaleMatchesDefinition) {
  const Tensor u = random_normal_tensor(Shape{2, 4, 5, 5}, 3), c = random_normal_tensor(Shape{2, 4, 5, 5}, 4);
  const float s = 7.5f, phi = 0.7f;
  const Tensor got = combine_guidance(u, c, s, phi);
  const int64_t per_row = 100;
  for (int64_t r = 0; r < 2; ++r) {
    std::vector<double> g(per_row), cc(per_row);
    for (int64_t i = 0; i < per_row; ++i) {
      cc[i] = c.f32()[r * per_row + i];
      g[i] = u.f32()[r * per_row + i] + s * (cc[i] - u.f32()[r * per_row + i]);
    }
    auto sd = [](const std::vector<double>& v) {
      double m = 0, q = 0;
      for (double x : v) m += x;
      m /= v.size();
      for (double x : v) q += (x - m) * (x - m);
      return std::sqrt(q / (v.size() - 1));
    };
    const double ratio = sd(cc) / sd(g);
    for (int64_t i = 0; i < per_row; ++i)
      EXPECT_NEAR(got.f32()[r * per_row + i], phi * g[i] * ratio + (1 - phi) * g[i], 1e-5);
  }
}

// A stand-in UNet: each output row depends on its latent row and its context row, so the test sees
// which embedding each row was paired with, and counts the rows it is asked for.
struct CountingDenoiser {
  int64_t rows = 0;
  int calls = 0;
  Tensor operator()(const Tensor& x, float t, const Tensor& ctx, const RowPerturbation* = nullptr) {
    ++calls;
    rows += x.dim(0);
    Tensor out = Tensor::empty(x.shape(), DType::F32);
    const int64_t per = x.numel() / x.dim(0), ctx_per = ctx.numel() / ctx.dim(0);
    for (int64_t r = 0; r < x.dim(0); ++r) {
      double m = 0;
      for (int64_t i = 0; i < ctx_per; ++i) m += ctx.contiguous().f32()[r * ctx_per + i];
      for (int64_t i = 0; i < per; ++i)
        out.f32()[r * per + i] = static_cast<float>(x.contiguous().f32()[r * per + i] * m + t);
    }
    return out;
  }
};

TEST(Guidance, ScaleOneEvaluatesHalfTheRowsOfGuidedSteps) {
  const int64_t B = 3;
  const Tensor uncond = random_normal_tensor(Shape{B, 77, 8}, 5), cond = random_normal_tensor(Shape{B, 77, 8}, 6);
  const Tensor x = random_normal_tensor(Shape{B, 4, 8, 8}, 7);
  const int steps = 10;
  int64_t rows_by_scale[2] = {};
  const float scales[2] = {1.0f, 7.5f};
  for (int i = 0; i < 2; ++i) {
    ClassifierFreeGuidance cfg(uncond, cond, GuidanceOptions{GuidanceSchedule::constant(scales[i]), 0.0f, {}});
    CountingDenoiser model;
    for (int s = 0; s < steps; ++s) cfg.predict(std::ref(model), x, 500.0f, s, steps);
    rows_by_scale[i] = model.rows;
    EXPECT_EQ(model.calls, steps);  // one UNet call per step in both cases
    EXPECT_EQ(cfg.unet_rows(), static_cast<uint64_t>(model.rows));
  }
  EXPECT_EQ(rows_by_scale[0], steps * B);
  EXPECT_EQ(rows_by_scale[1], steps * 2 * B);
  EXPECT_EQ(2 * rows_by_scale[0], rows_by_scale[1]);
}

TEST(Guidance, SplitEqualsBatchedAndUncondComesFirst) {
  const int64_t B = 2;
  const Tensor uncond = random_normal_tensor(Shape{B, 77, 8}, 8), cond = random_normal_tensor(Shape{B, 77, 8}, 9);
  const Tensor x = random_normal_tensor(Shape{B, 4, 8, 8}, 10);
  ClassifierFreeGuidance batched(uncond, cond, {GuidanceSchedule::constant(7.5f), 0.0f, CfgBatching::Batched});
  ClassifierFreeGuidance split(uncond, cond, {GuidanceSchedule::constant(7.5f), 0.0f, CfgBatching::Split});
  CountingDenoiser m1, m2;
  const Tensor a = batched.predict(std::ref(m1), x, 10.0f, 0, 1);
  const Tensor b = split.predict(std::ref(m2), x, 10.0f, 0, 1);
  EXPECT_EQ(testing::max_abs_diff(a, b), 0.0);
  EXPECT_EQ(m1.calls, 1);
  EXPECT_EQ(m2.calls, 2);
  // Against the formula with the uncond embedding as baseline.
  CountingDenoiser m3;
  const Tensor u = m3(x, 10.0f, uncond), c = m3(x, 10.0f, cond);
  EXPECT_EQ(testing::max_abs_diff(a, combine_guidance(u, c, 7.5f, 0.0f)), 0.0);
}

TEST(Guidance, ScheduleSkipsUncondOnlyWhereScaleIsOne) {
  const Tensor e = random_normal_tensor(Shape{1, 77, 8}, 11);
  const Tensor x = random_normal_tensor(Shape{1, 4, 8, 8}, 12);
  ClassifierFreeGuidance cfg(e, e, {GuidanceSchedule::parse("list:7,1,3,1"), 0.0f, {}});
  CountingDenoiser model;
  for (int s = 0; s < 4; ++s) cfg.predict(std::ref(model), x, 1.0f, s, 4);
  EXPECT_EQ(model.rows, 2 + 1 + 2 + 1);
  EXPECT_EQ(cfg.skipped_uncond_steps(), 2u);
}

TEST(GuidanceSchedule, ShapesAndParsing) {
  EXPECT_FLOAT_EQ(GuidanceSchedule::parse("7.5").at(3, 10), 7.5f);
  const auto lin = GuidanceSchedule::parse("linear:10:2");
  EXPECT_FLOAT_EQ(lin.at(0, 5), 10.0f);
  EXPECT_FLOAT_EQ(lin.at(2, 5), 6.0f);
  EXPECT_FLOAT_EQ(lin.at(4, 5), 2.0f);
  const auto cosine = GuidanceSchedule::parse("cosine:10:2");
  EXPECT_FLOAT_EQ(cosine.at(0, 5), 10.0f);
  EXPECT_FLOAT_EQ(cosine.at(2, 5), 6.0f);  // halfway in time is halfway in value
  EXPECT_NEAR(cosine.at(1, 5), 10.0f - 8.0f * (1 - std::cos(M_PI / 4)) / 2, 1e-5);
  EXPECT_FLOAT_EQ(cosine.at(4, 5), 2.0f);
  const auto list = GuidanceSchedule::parse("list:1,2.5,-3");
  EXPECT_FLOAT_EQ(list.at(2, 3), -3.0f);
  EXPECT_NO_THROW(list.validate(3));
  EXPECT_THROW(list.validate(4), Error);
  EXPECT_EQ(lin.describe(), "linear:10:2");
  EXPECT_EQ(list.describe(), "list:1,2.5,-3");  // what the PNG's parameters record
  for (const char* bad : {"abc", "linear:1", "list:", "cosine:1:x", "7.5x"}) {
    try {
      GuidanceSchedule::parse(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find("linear:START:END"), std::string::npos) << err.what();
    }
  }
}

}  // namespace
}  // namespace otter

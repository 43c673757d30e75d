// otter lab's engine: every experiment from one noise in one UNet call per step. Each
// experiment's final latents and image equal txt2img (otter generate) with its settings, bit for
// bit at f32; rows two experiments share are computed once (all of step 0's rows but one per
// text); the recorded statistics are those of the predictions (closed forms checked).
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "pipeline/default_model.h"
#include "pipeline/lab.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"

namespace otter {
namespace {

TEST(Lab, EveryExperimentIsItsOtterGenerateRunBitForBit) {
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(find_default_model(), *backend);
  LabSettings settings;
  settings.scales = {3.0f, 7.5f};  // 7.5 is cfg's scale: not repeated
  LabRequest request;
  request.prompt = "a red circle on a blue background";
  request.experiments = lab_experiments(settings);
  ASSERT_EQ(request.experiments.size(), 7u);
  request.width = request.height = 64;
  request.steps = 6;
  request.sampler = "euler_a";  // ancestral: each experiment's noise draws must be generate's
  request.seed = 11;
  std::vector<int64_t> rows_per_call;
  const LabResult lab = run_lab(*model, request, [&](int, int, int64_t rows) { rows_per_call.push_back(rows); });

  // Step 0: every experiment holds the same latents, so one row per text (prompt, "", the
  // negative). Step 1: cfg and scheduled (linear 7.5 -> 1 starts at cfg's 7.5) took the same step,
  // so they share both rows once more. After that each experiment's two rows are its own.
  const int64_t E = static_cast<int64_t>(request.experiments.size());
  ASSERT_EQ(rows_per_call.size(), 6u);
  EXPECT_EQ(rows_per_call[0], 3);
  EXPECT_EQ(rows_per_call[1], 2 * E - 2);
  for (size_t k = 2; k < rows_per_call.size(); ++k) EXPECT_EQ(rows_per_call[k], 2 * E) << "step " << k;
  EXPECT_EQ(lab.unet_rows, static_cast<uint64_t>(3 + (2 * E - 2) + 4 * 2 * E));
  EXPECT_EQ(lab.rows_asked, static_cast<uint64_t>(6 * 2 * E));

  for (size_t e = 0; e < request.experiments.size(); ++e) {
    const LabExperiment& x = request.experiments[e];
    Txt2ImgRequest r;
    r.prompts = {request.prompt};
    if (!x.negative.empty()) r.negative_prompts = {x.negative};
    r.width = r.height = 64;
    r.steps = request.steps;
    r.sampler = request.sampler;
    r.seed = request.seed;
    r.guidance.schedule = x.schedule;
    const Txt2ImgResult alone = txt2img(*model, r);
    EXPECT_EQ(testing::max_abs_diff(lab.experiments[e].final_latents, alone.final_latents), 0.0) << x.name;
    EXPECT_EQ(testing::max_abs_diff(lab.experiments[e].image.to(DType::F32), alone.image.to(DType::F32)), 0.0) << x.name;
    // The records: Δ = c − u, and cos(c, u) from the norms.
    for (const LabStep& s : lab.experiments[e].steps) {
      double d2 = 0;
      for (int64_t i = 0; i < s.delta.numel(); ++i) d2 += static_cast<double>(s.delta.f32()[i]) * s.delta.f32()[i];
      EXPECT_NEAR(s.norm_delta, std::sqrt(d2), 1e-9 * s.norm_delta);
      // The law of cosines ties the four recorded numbers: |c − u|² = |c|² + |u|² − 2 cos |c||u|.
      const double want = s.norm_cond * s.norm_cond + s.norm_uncond * s.norm_uncond -
                          2 * s.cosine * s.norm_cond * s.norm_uncond;
      EXPECT_NEAR(s.norm_delta * s.norm_delta, want, 1e-4 * s.norm_cond * s.norm_uncond) << x.name;
      EXPECT_EQ(s.x0_cond.dim(0), 4);
    }
  }
  // cond (scale 1) is guided by c alone: its guided x̂0 is its cond x̂0 exactly.
  const LabExperimentResult& cond = lab.experiments[0];
  EXPECT_EQ(request.experiments[0].name, "cond");
  for (const LabStep& s : cond.steps) EXPECT_EQ(testing::max_abs_diff(s.x0_guided, s.x0_cond), 0.0);
  // uncond (scale 0): u + 0·(c − u) = u.
  for (const LabStep& s : lab.experiments[1].steps) EXPECT_EQ(testing::max_abs_diff(s.x0_guided, s.x0_uncond), 0.0);
}

// Guider experiments (--guidance): stateful APG, a step window, CFG++ with its own sampler step,
// and the perturbed ones (PAG, SEG, SLG with their own rows and layers, auto-guidance's degraded
// uncond) all in the same calls: each equals otter generate --guidance RECIPE bit for bit.
TEST(Lab, GuiderExperimentsAreTheirGenerateRuns) {
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(find_default_model(), *backend);
  LabSettings settings;
  settings.only = {"cfg"};
  settings.guidance = {"apg:scale=5,momentum=-0.5,eta=0", "cfg:scale=9,start=0.3", "cfg_pp:scale=0.6",
                       "pag:layers=[mid,up.1],pag_scale=2", "seg:layers=down.1", "slg:skip_layer_guidance_stop=0.7,layers=mid",
                       "autoguidance:scale=4,layers=up.1"};
  LabRequest request;
  request.prompt = "a green square";
  request.experiments = lab_experiments(settings);
  ASSERT_EQ(request.experiments.size(), 8u);
  request.width = request.height = 64;
  request.steps = 5;
  request.sampler = "ddim";
  request.seed = 4;
  request.decode = false;
  const LabResult lab = run_lab(*model, request);
  for (size_t e = 0; e < request.experiments.size(); ++e) {
    Txt2ImgRequest r;
    r.prompts = {request.prompt};
    r.width = r.height = 64;
    r.steps = request.steps;
    r.sampler = request.sampler;
    r.seed = request.seed;
    r.decode = false;
    r.guidance.schedule = request.experiments[e].schedule;
    r.guider = request.experiments[e].guider;
    const Txt2ImgResult alone = txt2img(*model, r);
    EXPECT_EQ(testing::max_abs_diff(lab.experiments[e].final_latents, alone.final_latents), 0.0)
        << request.experiments[e].name;
  }
}

TEST(Lab, ExperimentsArePickedByNameAndUnknownNamesListTheKnownOnes) {
  LabSettings s;
  s.only = {"cfg", "reversed"};
  const auto two = lab_experiments(s);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1].schedule.at(0, 10), -7.5f);
  EXPECT_EQ(two[1].generate_options(), "--cfg-scale -7.5");
  s.only = {"nonsense"};
  try {
    (void)lab_experiments(s);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cond, uncond, cfg, negative, reversed, scheduled, scale 15"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace otter

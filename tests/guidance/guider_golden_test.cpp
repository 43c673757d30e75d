// Every guider against diffusers' guiders (../shared/golden/guiders.json, made by executing the
// guider modules of the diffusers commit the manifest names): for each case, the guider sees every
// step of the run in order, asks for exactly the predictions diffusers evaluated at the stored
// steps, and returns the guided prediction within 10x the case's own float32-vs-float64 error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>
#include <string>

#include "guidance/guider.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

// The manifest's spelling of what a step evaluates, in diffusers' order; `perturbed_name` is the
// guider's own name for its perturbed prediction (pred_cond_skip, pred_cond_seg).
std::string evaluated(const Needs& needs, const std::string& perturbed_name) {
  return std::string("pred_cond") + (needs.uncond ? "+pred_uncond" : "") + (needs.perturbed ? "+" + perturbed_name : "");
}

int count(const Needs& needs) { return 1 + needs.uncond + needs.perturbed; }

Tensor step_of(const Tensor& all, int64_t i) {
  std::vector<int64_t> shape = all.shape().to_vector();
  shape.erase(shape.begin());
  return all.slice(0, i, i + 1).contiguous().reshape(Shape(shape));
}

TEST(GuiderGolden, EveryImplementedGuiderMatchesDiffusers) {
  OTTER_REQUIRE_SHARED(shared);
  const testing::Golden golden(shared / "golden" / "guiders.json");
  const std::set<std::string> implemented{"ClassifierFreeGuidance", "ClassifierFreeZeroStarGuidance",
                                          "AdaptiveProjectedGuidance", "TangentialClassifierFreeGuidance",
                                          "MagnitudeAwareGuidance", "PerturbedAttentionGuidance",
                                          "SkipLayerGuidance", "SmoothedEnergyGuidance", "AutoGuidance",
                                          "AdaptiveProjectedMixGuidance", "FrequencyDecoupledGuidance"};
  const Tensor cond = golden.tensor("inputs/pred_cond"), uncond = golden.tensor("inputs/pred_uncond");
  const Tensor perturbed = golden.tensor("inputs/pred_perturbed");
  int cases = 0, not_yet = 0;
  for (const nlohmann::json& c : golden.manifest()["cases"]) {
    const std::string id = c["id"].get<std::string>(), kind = c["guider"].get<std::string>();
    if (!implemented.count(kind)) {
      ++not_yet;
      continue;
    }
    ++cases;
    auto guider = make_guider(kind, c["resolved_params"]);
    EXPECT_EQ(guider->name(), kind);
    const int steps = c["num_inference_steps"].get<int>();
    const nlohmann::json& stored = c["steps"];
    const Tensor want = golden.tensor_ref(c["output"]);
    const double tolerance = 10.0 * c.value("tolerance_hint_max_abs", 0.0);
    std::string perturbed_name = "pred_perturbed";
    for (auto it = c["inputs"].begin(); it != c["inputs"].end(); ++it)
      if (it.value() == "inputs/pred_perturbed") perturbed_name = it.key();
    double worst = 0;
    guider->reset();
    for (int i = 0; i < steps; ++i) {
      const GuiderStep s{i, steps, 0.0f};
      const Needs needs = guider->needs(s);
      Predictions p;
      p.cond = step_of(cond, i);
      if (needs.uncond) p.uncond = step_of(uncond, i);
      if (needs.perturbed) p.perturbed = step_of(perturbed, i);
      const Tensor pred = guider->combine(s, p);
      for (size_t k = 0; k < stored["step"].size(); ++k) {
        if (stored["step"][k].get<int>() != i) continue;
        EXPECT_EQ(count(needs), stored["num_conditions"].get<std::string>()[k] - '0')
            << id << " step " << i;
        EXPECT_EQ(evaluated(needs, perturbed_name), stored["predictions_evaluated"][k].get<std::string>()) << id << " step " << i;
        const Tensor w = step_of(want, static_cast<int64_t>(k));
        ASSERT_EQ(w.numel(), pred.numel()) << id;
        double max_abs = 0;
        for (int64_t e = 0; e < w.numel(); ++e) {
          const double d = std::fabs(static_cast<double>(pred.f32()[e]) - w.f32()[e]);
          max_abs = std::isnan(d) ? INFINITY : std::max(max_abs, d);
        }
        worst = std::max(worst, max_abs);
        EXPECT_LE(max_abs, tolerance) << id << " step " << i;
      }
    }
    std::printf("[ guider ] %-55s max |d| %.2e (bound %.2e)\n", id.c_str(), worst, tolerance);
  }
  std::printf("[ guider ] %d cases checked; %d cases of guiders not implemented yet\n", cases, not_yet);
  EXPECT_EQ(cases, 36);
  EXPECT_EQ(not_yet, 0);
}

}  // namespace
}  // namespace otter

#pragma once
// The experiments of `otter lab` (#13): ways of combining the same two predictions — the prompt's
// (cond) and a baseline's (uncond: the empty or a negative prompt) — that together show what the
// unconditional prediction is for. Each is classic CFG with its own baseline text and scale per
// step, so each experiment's image equals `otter generate` with the same settings:
//
//   cond       scale 1: the conditional prediction alone
//   uncond     scale 0: the unconditional prediction alone (what the model draws with no prompt)
//   cfg        the usual guidance, eps = u + s·(c − u)
//   negative   the same with a negative prompt as the baseline
//   reversed   guidance away from the prompt, u + s·(u − c) (= scale −s)
//   scheduled  the scale lowered over the steps (linear:s:1)
//   scale X    the sweep (--scales)
//   RECIPE     any guider (--guidance, repeatable), as `otter generate --guidance RECIPE`; the
//              perturbed ones (PAG, SEG, SLG, auto-guidance) get their own perturbed rows in the
//              shared call
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "guidance/guidance_recipe.h"
#include "guidance/guidance_schedule.h"

namespace otter {

struct LabExperiment {
  std::string name;       // "cfg", "scale 15", ...
  std::string negative;   // the baseline's text ("" = the empty prompt)
  GuidanceSchedule schedule = GuidanceSchedule::constant(7.5f);
  std::string caption;    // what it shows, in plain language
  std::optional<GuidanceRecipe> guider = std::nullopt;  // a --guidance experiment (then schedule is unused)
  // The equivalent `otter generate` options (besides prompt, seed, steps, sampler, size).
  std::string generate_options() const;
};

struct LabSettings {
  float cfg_scale = 7.5f;
  std::string negative = "solar system with 9 planets";  // the original experiment's baseline
  std::vector<float> scales{15.0f};                       // the sweep, beyond the named experiments
  std::vector<std::string> only;                          // --experiments: named ones to run (empty = all)
  std::vector<std::string> guidance;                      // --guidance recipes, each an experiment (always run)
};

// The experiments, in the report's order; a sweep scale equal to a named experiment's is not
// repeated. Unknown names in `only` are an error listing the known ones.
std::vector<LabExperiment> lab_experiments(const LabSettings& settings);

// The experiment's guided prediction at step `step` of `steps` from u and c (classic CFG: the
// conditional prediction itself at scale 1, u + s·(c − u) otherwise, as `otter generate`).
Tensor lab_guided(const LabExperiment& e, const Tensor& uncond, const Tensor& cond, int step, int steps);

}  // namespace otter

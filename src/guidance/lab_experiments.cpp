#include "guidance/lab_experiments.h"

#include <algorithm>

#include "core/error.h"
#include "core/number_text.h"
#include "guidance/classifier_free_guidance.h"

namespace otter {
namespace {

bool same_settings(const LabExperiment& a, const LabExperiment& b) {
  return !a.guider && !b.guider && a.negative == b.negative && a.schedule.describe() == b.schedule.describe();
}

}  // namespace

std::string LabExperiment::generate_options() const {
  if (guider) return "--guidance '" + guider->to_string() + "'";
  std::string out = schedule.kind() == GuidanceSchedule::Kind::Constant ? "--cfg-scale " + schedule.describe()
                                                                         : "--cfg-schedule " + schedule.describe();
  if (!negative.empty()) out += " -n \"" + negative + "\"";
  return out;
}

std::vector<LabExperiment> lab_experiments(const LabSettings& s) {
  const std::string scale = shortest_text(s.cfg_scale);
  std::vector<LabExperiment> all = {
      {"cond", "", GuidanceSchedule::constant(1.0f),
       "The prompt's prediction alone (scale 1): what the model makes of the prompt without guidance. Often "
       "right in kind but weak in colour and shape."},
      {"uncond", "", GuidanceSchedule::constant(0.0f),
       "The empty prompt's prediction alone (scale 0): what the model draws when told nothing. This is the "
       "baseline guidance measures the prompt against."},
      {"cfg", "", GuidanceSchedule::constant(s.cfg_scale),
       "Classifier-free guidance at scale " + scale + ": eps = u + s(c - u) moves past the prompt's prediction, "
       "away from the baseline, so what the prompt adds is exaggerated."},
      {"negative", s.negative, GuidanceSchedule::constant(s.cfg_scale),
       "The same guidance with \"" + s.negative + "\" as the baseline instead of the empty prompt: the image "
       "moves away from that text as well as towards the prompt."},
      {"reversed", "", GuidanceSchedule::constant(-s.cfg_scale),
       "The subtraction reversed, u + s(u - c): guidance away from the prompt. The image avoids what was "
       "asked for."},
      {"scheduled", "", GuidanceSchedule::linear(s.cfg_scale, 1.0f),
       "The scale lowered from " + scale + " at the first step to 1 at the last: strong guidance while the "
       "layout forms, none while details settle."},
  };
  for (float v : s.scales) {
    LabExperiment e{"scale " + shortest_text(v), "", GuidanceSchedule::constant(v),
                    "Guidance at scale " + shortest_text(v) + ", for the sweep over scales."};
    if (std::none_of(all.begin(), all.end(), [&](const LabExperiment& x) { return same_settings(x, e); }))
      all.push_back(e);
  }
  std::vector<LabExperiment> chosen = s.only.empty() ? all : std::vector<LabExperiment>{};
  for (const std::string& name : s.only) {
    const auto it = std::find_if(all.begin(), all.end(), [&](const LabExperiment& e) { return e.name == name; });
    if (it == all.end()) {
      std::string known;
      for (const LabExperiment& e : all) known += (known.empty() ? "" : ", ") + e.name;
      throw Error(cat("--experiments: no experiment '", name, "'; they are: ", known));
    }
    chosen.push_back(*it);
  }
  // --guidance experiments are always run (their recipes hold commas, so --experiments does not name them).
  for (const std::string& text : s.guidance) {
    LabExperiment e{text, "", GuidanceSchedule::constant(1.0f),
                    "The guider " + text + " (otter generate --guidance), from the same noise as the others.",
                    GuidanceRecipe::parse(text)};
    chosen.push_back(std::move(e));
  }
  return chosen;
}

Tensor lab_guided(const LabExperiment& e, const Tensor& uncond, const Tensor& cond, int step, int steps) {
  const float s = e.schedule.at(step, steps);
  // As ClassifierFreeGuidance: scale 1 is the conditional prediction itself.
  return s == 1.0f ? cond.contiguous() : combine_guidance(uncond, cond, s, 0.0f);
}

}  // namespace otter

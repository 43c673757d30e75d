#pragma once
// A guidance recipe: one string naming a guider and its parameters, accepted by
// `otter generate --guidance` and written into the PNG's parameters, e.g.
//
//   apg:scale=7.5,eta=0,norm_threshold=15
//   cfg_zero_star:scale=4,zero_init_steps=2
//   ClassifierFreeGuidance:guidance_scale=5,start=0.2,stop=0.8
//
// METHOD is otter's short name or diffusers' class name; parameters are diffusers' names or the
// short aliases below, values JSON literals (numbers, true/false, null, [lists]). Modifiers follow
// after ';':  interval=LO..HI  guides only where the step's sigma is in (LO, HI];
//             adaptive=GAMMA   stops evaluating the uncond rows once cos(cond, uncond) >= GAMMA.
#include <memory>
#include <optional>
#include <utility>
#include <string>

#include <nlohmann/json.hpp>

#include "guidance/guider.h"

namespace otter {

struct GuidanceRecipe {
  std::string method;      // as given (short or diffusers name)
  nlohmann::json params;   // diffusers' parameter names
  std::optional<std::pair<double, double>> interval;  // sigma interval (LO, HI]
  std::optional<double> adaptive;                      // cosine threshold of adaptive skipping
  static GuidanceRecipe parse(const std::string& text);
  // Canonical text: method, then the parameters in diffusers' names, sorted; parses back equal.
  std::string to_string() const;
  std::unique_ptr<Guider> make() const;
};

}  // namespace otter

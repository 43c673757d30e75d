#pragma once
// POST /v1/lab: `otter lab` over HTTP, for the web page's lab view — every experiment from one
// noise in one batched pass (pipeline/lab.h), answered with each experiment's final image (PNG
// with its `otter generate` parameters) and, per step, the cheap latent->RGB previews of x̂0(cond),
// x̂0(uncond), x̂0(guided), the difference Δ as a heat map, and the step's numbers.
#include <nlohmann/json.hpp>

#include "api_request.h"
#include "model_registry.h"
#include "pipeline/lab.h"

namespace otter::serve {

struct LabSpec {
  std::string model;  // "" = default
  LabRequest request;
};

// Fields: prompt, negative_prompt (the negative experiment's baseline), seed, steps, cfg_scale,
// scales, experiments ("cfg,uncond"), guidance (a list of recipes), sampler, width, height, model.
LabSpec parse_lab_request(const nlohmann::json& body, const Limits& limits, const ModelCatalog& models);

// Runs it (the caller holds the device) and builds the response.
nlohmann::json run_lab_request(LoadedModel& model, LabSpec& spec, const std::string& precision_name);

}  // namespace otter::serve

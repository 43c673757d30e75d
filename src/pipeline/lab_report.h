#pragma once
// otter lab's report: ONE self-contained index.html (images inline as data: URIs, plots as inline
// SVG drawn here, no script, no network) readable without otter — the experiments' final images
// with their parameters; per experiment a caption, a filmstrip over the chosen steps of x̂0(cond),
// x̂0(uncond), the difference Δ = c − u as a heat map and the guided x̂0, and plots of the
// predictions' norms and of cos(cond, uncond) over the steps.
#include <string>
#include <vector>

#include "pipeline/lab.h"

namespace otter {

struct LabReportInput {
  const LabRequest* request = nullptr;
  const LabResult* result = nullptr;
  std::string model_name, precision;
  std::vector<int> filmstrip_steps;  // evaluations shown in the filmstrips
  // Per experiment, per filmstrip step: the VAE's decode of x̂0(cond), x̂0(uncond), x̂0(guided),
  // each [H, W, 3] bytes; empty for an experiment when previews are off (the filmstrip shows Δ only).
  std::vector<std::vector<std::array<Tensor, 3>>> decoded;
};

std::string lab_report_html(const LabReportInput& in);

// Δ as a heat map: per latent pixel the L2 norm over channels, scaled by `max_norm`, black -> red ->
// yellow -> white, [h, w, 3] bytes.
Tensor delta_heat_map(const Tensor& delta, double max_norm);

// The file name of an experiment's image ("scale 15" -> "scale_15.png").
std::string lab_image_name(const std::string& experiment);

}  // namespace otter

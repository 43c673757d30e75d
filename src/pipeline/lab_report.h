#pragma once
// otter lab's report: ONE self-contained index.html (images inline as data: URIs, plots as inline
// SVG drawn here, no script, no network) readable without otter — the experiments' final images
// with their parameters; per experiment a caption, a filmstrip over EVERY step of x̂0(cond),
// x̂0(uncond), the difference Δ = c − u as a heat map and the guided x̂0 (pictures from the cheap
// latent->RGB map), the same decoded by the real VAE at a few chosen steps, and plots of the
// predictions' norms and of cos(cond, uncond) over the steps.
#include <array>
#include <string>
#include <vector>

#include "pipeline/lab.h"

namespace otter {

struct LabReportInput {
  const LabRequest* request = nullptr;
  const LabResult* result = nullptr;
  std::string model_name, precision;
  // Per experiment, per step (every step): the cheap map's pictures of x̂0(cond), x̂0(uncond),
  // x̂0(guided), each [h', w', 3] bytes; empty when previews are off or the VAE has no map (the
  // every-step filmstrip then shows Δ only). `preview_note` says what the map is and its error.
  std::vector<std::vector<std::array<Tensor, 3>>> previews;
  std::string preview_note;
  std::vector<int> decode_steps;  // evaluations the VAE decoded
  // Per experiment, per decode step: the VAE's decode of x̂0(cond), x̂0(uncond), x̂0(guided),
  // each [H, W, 3] bytes; empty for an experiment when previews are off.
  std::vector<std::vector<std::array<Tensor, 3>>> decoded;
};

std::string lab_report_html(const LabReportInput& in);

// Δ as a heat map: per latent pixel the L2 norm over channels, scaled by `max_norm`, black -> red ->
// yellow -> white, [h, w, 3] bytes.
Tensor delta_heat_map(const Tensor& delta, double max_norm);

// The largest per-pixel norm of Δ over an experiment's steps: its heat maps' common scale.
double max_delta_norm(const LabExperimentResult& r);

// The file name of an experiment's image ("scale 15" -> "scale_15.png").
std::string lab_image_name(const std::string& experiment);

}  // namespace otter

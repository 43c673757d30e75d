#pragma once
// `otter lab` (#13): every experiment of guidance/lab_experiments.h from ONE initial noise, all
// advancing together — each step is one UNet call over every experiment's rows, and rows two
// experiments share at a step (the same text on the same latents, e.g. everything at step 0) are
// computed once. Per step and experiment it records both predictions, their difference, the guided
// prediction, norms, the cosine between cond and uncond, the scale, and the predicted clean latent
// x̂0 of each branch; each experiment's final latents equal `otter generate` with its settings.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "guidance/lab_experiments.h"
#include "pipeline/stable_diffusion.h"

namespace otter {

struct LabRequest {
  std::string prompt;
  std::vector<LabExperiment> experiments;
  int width = 512, height = 512;
  int steps = 20;
  std::string sampler;  // "" = the model's own
  uint64_t seed = 0;
  TextEncodeOptions text;
  bool decode = true;
};

struct LabStep {
  float timestep = 0, sigma = 0, scale = 0;
  double norm_cond = 0, norm_uncond = 0, norm_delta = 0, norm_guided = 0;  // L2 over the latent
  double cosine = 0;                                                       // cos(cond, uncond)
  Tensor x0_cond, x0_uncond, x0_guided;  // [4, h, w] predicted clean latents
  Tensor delta;                          // [4, h, w] cond − uncond
};

struct LabExperimentResult {
  Tensor final_latents;  // [1, 4, h, w]
  Tensor image;          // [1, H, W, 3] U8
  std::vector<LabStep> steps;
};

struct LabResult {
  std::string sampler;
  Tensor init_noise;
  std::vector<LabExperimentResult> experiments;
  uint64_t unet_rows = 0;      // rows evaluated
  uint64_t rows_asked = 0;     // rows the experiments asked for (before sharing)
  double seconds_denoise = 0, seconds_decode = 0, seconds_text = 0;
};

// Called after each step with (evaluation, evaluations, rows this call).
using LabProgress = std::function<void(int, int, int64_t)>;

LabResult run_lab(StableDiffusion& model, const LabRequest& request, const LabProgress& progress = {});

// The `otter generate` request that makes experiment `e`'s image, and that image's result as
// txt2img would return it: what its PNG's parameters are written from.
struct Txt2ImgRequest;
struct Txt2ImgResult;
std::pair<Txt2ImgRequest, Txt2ImgResult> lab_as_generate(const LabRequest& request, const LabResult& result, size_t e);

}  // namespace otter

#pragma once
// The memory plan: before a model is built or a step is run, estimate the process's peak
// resident memory for a generation from the model's configs, the size, the batch, the precision
// and the VAE tiling choice, and decide whether it fits. A typo in a size or a count must end in
// a sentence, not an OOM kill.
//
// peak = max(UNet phase, decode phase), each = the process before loading (measured) + the
// libraries' working memory + the weights resident in their compute layout + that phase's
// activations (activation_memory.h replays the forward passes). Measured against otter's peak
// RSS for the bundled model and SD 1.5 (README, *Memory*; tests/pipeline/memory_plan_test.cpp).
#include <cstdint>
#include <algorithm>
#include <optional>
#include <string>

#include "backend/backend.h"
#include "core/system_memory.h"  // format_gb
#include "io/model_configs.h"
#include "pipeline/activation_memory.h"

namespace otter {

struct MemoryPlanRequest {
  int width = 512, height = 512;  // image size
  int64_t images = 1;             // images denoised and decoded together (one turn)
  int64_t total_images = 0;       // images of the whole run (0: `images`); their 8-bit pixels and latents are kept
  int unet_rows_per_image = 2;    // 2: [uncond, cond] in one call (3 with a perturbed row); 1: cond only or --cfg-batch split
  int64_t text_windows = 1;       // 77-token windows per prompt (--long-prompt chunk makes more)
  Precision precision = Precision::F32;
  int threads = 1;
  std::optional<bool> vae_tiling;  // forced on/off, or automatic as the pipeline decides
  double vae_memory_limit_gb = 2.0;
  double base_bytes = 0;  // the process's RSS before loading (process_memory().resident_bytes)
  bool encodes_image = false;  // image to image: the VAE encoder runs on one picture first
  // Txt2ImgRequest::release_weights_when_done (the CLI): the text encoder's prepared weights are
  // gone before the UNet runs, and the UNet's before the last turn's decode.
  bool releases_weights = false;
};

struct MemoryPlan {
  double base = 0, runtime = 0;                              // before loading; libraries' working memory
  double outputs = 0;        // kept for the whole run: every image's pixels and latents, the turn's text rows
  double text_weights = 0, unet_weights = 0, vae_weights = 0;  // resident, in the compute layout
  ActivationBytes text, unet, vae;
  ActivationBytes vae_encode;  // image to image's one encode (empty otherwise)
  bool vae_tiled = false;
  int64_t latent_width = 0, latent_height = 0;  // of the request's size
  MemoryPlanRequest request;

  double weights() const { return text_weights + unet_weights + vae_weights; }
  // Released weights (request.releases_weights): the text encoder's after the encoding, the UNet's
  // before the decode when this turn is the run's only one (earlier turns decode beside it).
  bool text_released() const { return request.releases_weights; }
  bool unet_released_for_decode() const {
    return request.releases_weights && (request.total_images <= request.images);
  }
  double unet_phase() const {
    const double text_held = text_released() ? 0.0 : text_weights + text.total();
    return base + runtime + text_held + unet_weights + outputs + unet.total();
  }
  double decode_phase() const {
    const double held = vae_weights + (text_released() ? 0.0 : text_weights) +
                        (unet_released_for_decode() ? 0.0 : unet_weights);
    // Nothing of the UNet's activations: release_cached_memory() ends in malloc_trim (before it,
    // glibc kept 15-25 MB of their small blocks through the decode at 256-512 px).
    return base + runtime + held + outputs + vae.total();
  }
  // The init picture's encode, before the denoising: every weight may be resident by then. None
  // without an init picture (txt2img never prepares the encoder, nor holds all weights at once).
  double encode_phase() const {
    if (!request.encodes_image) return 0.0;
    return base + runtime + weights() - (text_released() ? text_weights : 0.0) + outputs + vae_encode.total();
  }
  double peak() const { return std::max({unet_phase(), decode_phase(), encode_phase()}); }
  // "2.71 GB (weights 2.15, UNet activations 0.28 on 2 rows at 64x64 latents, VAE decode 0.40, ...)"
  std::string describe() const;
};

MemoryPlan plan_memory(const ModelConfigs& configs, const MemoryPlanRequest& request);

// What a run may use: --memory-limit when given, else what the system and cgroup leave this
// process minus a margin (5%, at least 256 MB) for everything else on the machine.
struct MemoryBudget {
  std::optional<double> bytes;  // absent: nothing readable, no check
  std::string source;           // "--memory-limit 2 GB" / "MemAvailable 21.3 GB, ... minus a 5% margin"
};
MemoryBudget memory_budget(std::optional<double> limit_gb);

// Decides how a request runs within `budget`: all images at once, or in turns of max_batch images
// (the largest that fits, or the user's --max-batch); throws an otter::Error naming the estimate,
// the budget and what would fit (a smaller size, --vae-tile, --cfg-batch split, fewer images) when
// not even one image fits.
struct MemoryDecision {
  MemoryPlan plan;     // of one turn
  int64_t turn_images; // images per turn
  bool chose_turns = false;
};
MemoryDecision fit_memory(const ModelConfigs& configs, MemoryPlanRequest request, int64_t total_images,
                          std::optional<int64_t> max_batch, const MemoryBudget& budget);


}  // namespace otter

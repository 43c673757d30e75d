#pragma once
// The model's cheap latent -> RGB preview map (models/latent_rgb_map.h), fitted once per VAE and
// cached beside the model: `vae/otter_latent_rgb.json` in a diffusers folder, `FILE.otter_latent_rgb.json`
// beside a single-file checkpoint, or — where the model's folder is read-only — under the user's
// cache ($XDG_CACHE_HOME/otter or ~/.cache/otter), named by the VAE's fingerprint. A cached map is
// used only when its fingerprint (the VAE's outer layers, byte for byte, and the fit's version)
// is the loaded VAE's; otherwise it is fitted again and rewritten.
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "models/latent_rgb_map.h"
#include "pipeline/stable_diffusion.h"

namespace otter {

struct LatentPreview {
  LatentRgbMap map;
  LatentRgbError held_out;        // its error on images it was not fitted on (recorded at fit time)
  std::filesystem::path file;     // where it was read from or written to ("" if it could not be written)
  bool fitted_now = false;
  double fit_seconds = 0;
};

// The fingerprint of a VAE's weights: FNV-1a over the names, dtypes, shapes and bytes of its
// first and last layers (what a different VAE cannot share), and the fit's version.
std::string vae_fingerprint(const TensorSource& vae);

// Where the map of `model` is cached beside it.
std::filesystem::path latent_preview_file(const ModelFiles& files);

// The map for `model`: read from the cache, else fitted (seconds, logged through `log`) and
// cached. std::nullopt when the VAE has no encoder (the fit encodes pictures).
std::optional<LatentPreview> latent_preview_for(StableDiffusion& model,
                                                const std::function<void(const std::string&)>& log = {});

// The fit itself, on the model's VAE: 32 pictures (seed 1) at the model's native size up to 128²,
// and its error on 16 others (seed 2).
LatentPreview fit_latent_preview(StableDiffusion& model);

}  // namespace otter

#include "pipeline/default_model.h"

#include <cstdlib>

#include "core/error.h"

namespace otter {

std::vector<std::filesystem::path> default_model_candidates() {
  std::vector<std::filesystem::path> out;
  if (const char* env = std::getenv("OTTER_MODEL"); env && *env) out.emplace_back(env);
  out.push_back(std::filesystem::path(OTTER_SOURCE_MODELS_DIR) / kDefaultModelName);
  out.push_back(std::filesystem::path(OTTER_INSTALL_DATADIR) / "models" / kDefaultModelName);
  return out;
}

std::filesystem::path find_default_model() {
  const auto candidates = default_model_candidates();
  std::string searched;
  for (const auto& c : candidates) {
    if (std::filesystem::exists(c)) return c;
    searched += "\n  " + c.string();
  }
  throw Error(cat("no model given (-m) and the bundled model '", kDefaultModelName, "' was not found; looked in:",
                  searched, "\nPass -m MODEL (a diffusers folder or a .safetensors checkpoint) or set OTTER_MODEL."));
}

}  // namespace otter

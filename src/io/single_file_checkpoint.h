#pragma once
// Original single-file SD checkpoints (.safetensors in the CompVis/Stability layout): detects
// the family from the text encoder's layout, picks the configs (built-in SD 1.5/2.1 or
// --config), and exposes each component under diffusers names through the LDM key map.
// Used by open_model(), which then completes the configs and checks every tensor.
#include <filesystem>

#include "io/model_files.h"

namespace otter {

ModelFiles open_single_file(const std::filesystem::path& path, const ModelOptions& options);

}  // namespace otter

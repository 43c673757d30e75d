#pragma once
// `otter info PATH`: a human-readable description of a file otter can read. describe_path()
// chooses the printer by file type; each printer lives in its own info_<type>.cpp.
#include <filesystem>
#include <optional>
#include <ostream>

#include "io/model_files.h"

namespace otter::cli {

// Dispatches on what `path` is (model folder, single-file checkpoint, other safetensors
// file, ...); throws otter::Error for anything else. `model` applies to models only.
void describe_path(const std::filesystem::path& path, std::ostream& out, const ModelOptions& model = {},
                   const std::optional<std::filesystem::path>& tokenizer = std::nullopt);

void describe_safetensors(const std::filesystem::path& path, std::ostream& out);

// info_model.cpp: SD models in either layout (family, prediction, components, parameters).
bool is_single_file_checkpoint(const std::filesystem::path& path);  // has model.diffusion_model.* tensors
void describe_model(const std::filesystem::path& path, const ModelOptions& options, std::ostream& out,
                    const std::optional<std::filesystem::path>& tokenizer = std::nullopt);
// info_png.cpp: a generated image's size and the generation parameters in its text chunks.
void describe_png(const std::filesystem::path& path, std::ostream& out);

}  // namespace otter::cli

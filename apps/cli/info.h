#pragma once
// `otter info PATH`: a human-readable description of a file otter can read. describe_path()
// chooses the printer by file type; each printer lives in its own info_<type>.cpp.
#include <filesystem>
#include <ostream>

namespace otter::cli {

// Dispatches on what `path` is (safetensors file, ...); throws otter::Error for anything else.
void describe_path(const std::filesystem::path& path, std::ostream& out);

void describe_safetensors(const std::filesystem::path& path, std::ostream& out);

}  // namespace otter::cli

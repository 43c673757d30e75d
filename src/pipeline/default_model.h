#pragma once
// Where `otter generate` finds a model when no -m is given: the small demo model otter ships
// (models/otter-shapes), looked up so that it works from any working directory.
#include <filesystem>
#include <optional>
#include <vector>

namespace otter {

inline constexpr const char* kDefaultModelName = "otter-shapes";

// In order: $OTTER_MODEL; the source tree's models/ folder (known to a build tree); the install
// prefix's share/otter/models/. The first that exists wins.
std::vector<std::filesystem::path> default_model_candidates();
// Throws an otter::Error listing the places searched when none exists.
std::filesystem::path find_default_model();

}  // namespace otter

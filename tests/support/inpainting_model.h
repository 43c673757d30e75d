#pragma once
// The tiny inpainting model of the goldens: tiny-sd1 (../shared) with the 9-channel UNet of
// tests/goldens/tiny-sd1-inpaint, made in a work folder in either checkpoint layout.
#include <filesystem>
#include <vector>

namespace otter::testing {

// A diffusers folder of links to tiny-sd1's components and the project's UNet.
std::filesystem::path inpainting_model_folder(const std::filesystem::path& shared, const std::filesystem::path& dir);
// One original-layout file: tiny-sd1.safetensors with its UNet replaced by the project's (converted
// by diffusers' own script).
std::filesystem::path inpainting_model_file(const std::filesystem::path& shared, const std::filesystem::path& dir);
// The --config files the single file needs (tiny-sd1's, with the 9-channel UNet's config).
std::vector<std::filesystem::path> inpainting_model_configs(const std::filesystem::path& shared);

}  // namespace otter::testing

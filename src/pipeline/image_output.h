#pragma once
// Writing generated images as PNG files with their generation parameters in a `parameters`
// text chunk (AUTOMATIC1111 webui's format, which other tools read and `otter info` prints).
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "io/generation_parameters.h"
#include "pipeline/txt2img.h"

namespace otter {

// The webui's display name for an otter sampler ("euler_a" -> "Euler a"), and back ("" if unknown).
std::string webui_sampler_name(const std::string& sampler);
std::string sampler_from_webui_name(const std::string& webui_name);

// The parameters of image `index` of a txt2img run.
GenerationParameters describe_generation(const Txt2ImgRequest& request, const Txt2ImgResult& result,
                                         const std::string& model_name, int index);

// Output file names: `out.png` for one image, `out-0.png`, `out-1.png`, ... for several.
std::vector<std::filesystem::path> output_paths(const std::filesystem::path& out, int64_t count);

// Fails early (before any work) when the folder of `out` cannot be written.
void check_output_writable(const std::filesystem::path& out);

// Image `index` of `result` as PNG bytes with its `parameters` chunk: the bytes save_images writes
// (otter serve sends these, so a server image is the CLI's file).
std::vector<uint8_t> encode_image_png(const Txt2ImgRequest& request, const Txt2ImgResult& result,
                                      const std::string& model_name, int index,
                                      const std::vector<std::pair<std::string, std::string>>& extra = {});

// Writes every image of `result` (atomically: temp file, then rename); returns the paths. `extra`
// parameters (e.g. the precision) are added to each image's.
std::vector<std::filesystem::path> save_images(const std::filesystem::path& out, const Txt2ImgRequest& request,
                                               const Txt2ImgResult& result, const std::string& model_name,
                                               const std::vector<std::pair<std::string, std::string>>& extra = {});

}  // namespace otter

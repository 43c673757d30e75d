#include "pipeline/image_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/number_text.h"
#include "io/atomic_file.h"
#include "io/png.h"

namespace otter {
namespace {

const std::map<std::string, std::string>& webui_names() {
  static const std::map<std::string, std::string> names = {
      {"pndm", "PLMS"},   {"lms", "LMS"},   {"ddim", "DDIM"},         {"ddpm", "DDPM"},
      {"euler", "Euler"}, {"euler_a", "Euler a"}, {"heun", "Heun"}, {"dpmpp_2m", "DPM++ 2M"},
      {"dpmpp_2m_karras", "DPM++ 2M Karras"}, {"unipc", "UniPC"}};
  return names;
}

}  // namespace

std::string webui_sampler_name(const std::string& sampler) {
  const auto it = webui_names().find(sampler);
  return it == webui_names().end() ? sampler : it->second;
}

std::string sampler_from_webui_name(const std::string& webui_name) {
  for (const auto& [otter_name, webui] : webui_names())
    if (webui == webui_name || otter_name == webui_name) return otter_name;
  return "";
}

GenerationParameters describe_generation(const Txt2ImgRequest& request, const Txt2ImgResult& result,
                                         const std::string& model_name, int index) {
  GenerationParameters p;
  const size_t prompt_index = static_cast<size_t>(index / request.images_per_prompt);
  p.prompt = request.prompts.at(prompt_index);
  if (!request.negative_prompts.empty())
    p.negative_prompt = request.negative_prompts.size() == 1 ? request.negative_prompts[0]
                                                              : request.negative_prompts.at(prompt_index);
  p.steps = request.steps;
  p.sampler = webui_sampler_name(result.sampler);
  const GuidanceSchedule& schedule = request.guidance.schedule;
  if (schedule.kind() == GuidanceSchedule::Kind::Constant) {
    p.cfg_scale = schedule.at(0, request.steps);
  } else {
    p.cfg_scale = schedule.at(0, request.steps);
    p.extra.emplace_back("CFG schedule", schedule.describe());
  }
  if (request.guider && request.guider->params.contains("guidance_scale"))
    p.cfg_scale = request.guider->params["guidance_scale"].get<double>();
  p.seed = request.seed;
  p.width = request.width;
  p.height = request.height;
  p.model = model_name;
  // One seeded draw covers the whole batch (as diffusers); the position says which image this is.
  const int64_t own_batch = result.final_latents.defined() ? result.final_latents.dim(0) : 1;
  const int64_t batch = request.noise_batch_rows > 0 ? request.noise_batch_rows : own_batch;
  if (batch > 1) {
    p.extra.emplace_back("Batch size", std::to_string(batch));
    p.extra.emplace_back("Batch pos", std::to_string((request.noise_batch_rows > 0 ? request.noise_first_row : 0) + index));
  }
  if (request.guidance.rescale > 0) p.extra.emplace_back("CFG Rescale phi", shortest_text(request.guidance.rescale));
  if (request.guider) p.extra.emplace_back("Guidance", request.guider->to_string());
  if (request.sampler_options.eta != 0) p.extra.emplace_back("Eta", shortest_text(request.sampler_options.eta));
  if (request.text.clip_skip != 1) p.extra.emplace_back("Clip skip", std::to_string(request.text.clip_skip));
  if (request.text.long_prompt == LongPrompt::chunk) p.extra.emplace_back("Long prompt", "chunk");
  if (!request.text.prompt_weighting) p.extra.emplace_back("Emphasis", "None");
  if (result.vae_tiled) p.extra.emplace_back("VAE tiles", "64");
  if (request.init_image) p.extra.emplace_back("Denoising strength", shortest_text(request.init_image->strength));
  if (request.init_image && request.init_image->mask.defined())
    p.extra.emplace_back("Mask blur", shortest_text(request.init_image->mask_blur));
  return p;
}

std::vector<std::filesystem::path> output_paths(const std::filesystem::path& out, int64_t count) {
  if (count == 1) return {out};
  std::vector<std::filesystem::path> paths;
  const std::string stem = out.stem().string(), ext = out.has_extension() ? out.extension().string() : ".png";
  for (int64_t i = 0; i < count; ++i) paths.push_back(out.parent_path() / (stem + "-" + std::to_string(i) + ext));
  return paths;
}

void check_output_writable(const std::filesystem::path& out) {
  const std::filesystem::path dir = out.has_parent_path() ? out.parent_path() : std::filesystem::path(".");
  OTTER_CHECK(std::filesystem::is_directory(dir), "cannot write '", out.string(), "': folder '", dir.string(),
              "' does not exist");
  std::string probe = (dir / ".otter-write-test-XXXXXX").string();
  const int fd = mkstemp(probe.data());
  OTTER_CHECK(fd >= 0, "cannot write '", out.string(), "': folder '", dir.string(), "' is not writable (",
              std::strerror(errno), ")");
  ::close(fd);
  ::unlink(probe.c_str());
}

std::vector<uint8_t> encode_image_png(const Txt2ImgRequest& request, const Txt2ImgResult& result,
                                      const std::string& model_name, int index,
                                      const std::vector<std::pair<std::string, std::string>>& extra) {
  const Tensor& images = result.image;
  const int64_t H = images.dim(1), W = images.dim(2);
  GenerationParameters params = describe_generation(request, result, model_name, index);
  params.extra.insert(params.extra.end(), extra.begin(), extra.end());
  return encode_png(images.data<uint8_t>() + index * H * W * 3, static_cast<int>(W), static_cast<int>(H),
                    {{"parameters", format_parameters(params)}});
}

std::vector<std::filesystem::path> save_images(const std::filesystem::path& out, const Txt2ImgRequest& request,
                                               const Txt2ImgResult& result, const std::string& model_name,
                                               const std::vector<std::pair<std::string, std::string>>& extra) {
  const int64_t B = result.image.dim(0);
  const auto paths = output_paths(out, B);
  for (int64_t b = 0; b < B; ++b)
    write_file_atomically(paths[static_cast<size_t>(b)], encode_image_png(request, result, model_name, static_cast<int>(b), extra));
  return paths;
}

}  // namespace otter

#pragma once
// Requests of the server's three APIs turned into generation jobs, with every field checked: a
// field of the wrong type, out of its range, or naming something that does not exist (sampler,
// model, guidance recipe) is an ApiError naming the field and what it accepts. Unknown fields are
// ignored, as the webui and OpenAI do.
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "generation_job.h"

namespace otter::serve {

struct ApiError {
  int status = 400;
  std::string message;
  std::string field;  // "" when it is not about one field
};

// Throws the 400 ApiError every request parser reports a bad field with.
[[noreturn]] inline void bad_request(const std::string& field, const std::string& message) {
  throw ApiError{400, message, field};
}

struct Limits {
  int max_side = 2048;      // pixels, each of width and height
  int max_steps = 150;
  int max_images = 16;      // per request (batch_size · n_iter, or n)
  size_t max_body = 1 << 20;
};

// The names of the models a server offers: all request parsing needs of them (ModelRegistry is
// one; the fuzzers use a fixed list).
class ModelCatalog {
 public:
  virtual ~ModelCatalog() = default;
  virtual bool has(const std::string& name) const = 0;
  virtual std::vector<std::string> names() const = 0;
  // LoRA files by name (the server's --loras DIR); none by default.
  virtual std::optional<std::filesystem::path> lora(const std::string& /*name*/) const { return std::nullopt; }
  virtual std::vector<std::string> lora_names() const { return {}; }
};

// The webui's extra-network tags in a prompt, <lora:NAME> or <lora:NAME:WEIGHT>: removed from the
// prompt and resolved by name in `models` (an unknown name is an ApiError on `field`).
std::vector<LoraSpec> take_lora_tags(std::string& prompt, const ModelCatalog& models, const char* field);

// POST /sdapi/v1/txt2img. `webui_model` is the model /sdapi/v1/options selected ("" = default).
GenerationSpec parse_webui_txt2img(const nlohmann::json& body, const Limits& limits, const ModelCatalog& models,
                                   const std::string& webui_model);
// POST /sdapi/v1/img2img: txt2img's fields plus init_images (one base64 PNG, a data: URL prefix
// allowed), denoising_strength (0, 1] (default 0.75) and resize_mode 0 ("just resize": the picture
// is resampled to width x height when they are given; else its own size, rounded down to
// multiples of 8). Inpainting: mask (a base64 PNG of the picture's size, white = repaint),
// mask_blur (pixels, default 4), inpainting_mask_invert; inpainting_fill 1 (original) and
// inpaint_full_res false only.
GenerationSpec parse_webui_img2img(const nlohmann::json& body, const Limits& limits, const ModelCatalog& models,
                                   const std::string& webui_model);
// POST /v1/images/generations.
GenerationSpec parse_openai_generation(const nlohmann::json& body, const Limits& limits, const ModelCatalog& models);
// POST /v1/jobs (otter's own names; see the README), image to image and inpainting included:
// init_image, strength, mask, mask_blur, mask_invert.
GenerationSpec parse_native_job(const nlohmann::json& body, const Limits& limits, const ModelCatalog& models);

// The body as JSON, or an ApiError saying where it is malformed.
nlohmann::json parse_body(const std::string& body);

// A random seed as the webui draws one for -1 (0 … 2^32 − 1).
uint64_t random_seed();

}  // namespace otter::serve

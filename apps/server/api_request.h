#pragma once
// Requests of the server's three APIs turned into generation jobs, with every field checked: a
// field of the wrong type, out of its range, or naming something that does not exist (sampler,
// model, guidance recipe) is an ApiError naming the field and what it accepts. Unknown fields are
// ignored, as the webui and OpenAI do.
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "generation_job.h"

namespace otter::serve {

struct ApiError {
  int status = 400;
  std::string message;
  std::string field;  // "" when it is not about one field
};

struct Limits {
  int max_side = 2048;      // pixels, each of width and height
  int max_steps = 150;
  int max_images = 16;      // per request (batch_size · n_iter, or n)
  size_t max_body = 1 << 20;
};

class ModelRegistry;

// POST /sdapi/v1/txt2img. `webui_model` is the model /sdapi/v1/options selected ("" = default).
GenerationSpec parse_webui_txt2img(const nlohmann::json& body, const Limits& limits, const ModelRegistry& models,
                                   const std::string& webui_model);
// POST /v1/images/generations.
GenerationSpec parse_openai_generation(const nlohmann::json& body, const Limits& limits, const ModelRegistry& models);
// POST /v1/jobs (otter's own names; see the README).
GenerationSpec parse_native_job(const nlohmann::json& body, const Limits& limits, const ModelRegistry& models);

// The checks that need the model, before the job is queued: the size's divisibility by the UNet's,
// the sampler with the model's scheduler, the guider's layers and latent size. Fills in the
// model's own size where none was asked. Field names are the API's.
struct ModelFields {
  const char* width = "width";
  const char* height = "height";
  const char* sampler = "sampler";
  const char* guidance = "guidance";
};
struct LoadedModel;
void check_against_model(GenerationSpec& spec, const LoadedModel& model, const ModelFields& fields);

// The body as JSON, or an ApiError saying where it is malformed.
nlohmann::json parse_body(const std::string& body);

// A random seed as the webui draws one for -1 (0 … 2^32 − 1).
uint64_t random_seed();

}  // namespace otter::serve

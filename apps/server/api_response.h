#pragma once
// The server's response bodies: the webui's txt2img result (images, parameters, and `info` — a
// JSON string, as the webui sends it), /progress and /samplers; OpenAI's image list; otter's job.
#include <nlohmann/json.hpp>

#include "generation_job.h"

namespace otter::serve {

nlohmann::json webui_txt2img_response(const GenerationJob& job, const nlohmann::json& request_body);
nlohmann::json webui_samplers();
nlohmann::json webui_progress(const GenerationJob* job, bool skip_image);
nlohmann::json openai_response(const GenerationJob& job);
// A job's state, its numbers and (with_images) its images as base64 PNG with their parameters.
nlohmann::json job_json(const GenerationJob& job, bool with_images);

}  // namespace otter::serve

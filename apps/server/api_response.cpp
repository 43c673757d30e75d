#include "api_response.h"

#include <ctime>

#include "io/base64.h"
#include "pipeline/image_output.h"
#include "sampling/sampler.h"

namespace otter::serve {
namespace {

using nlohmann::json;

std::string timestamp(std::chrono::system_clock::time_point t) {  // the webui's job_timestamp: YYYYmmddHHMMSS
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &tm);
  return buf;
}

double scale_of(const Txt2ImgRequest& r) {
  if (r.guider && r.guider->params.contains("guidance_scale")) return r.guider->params["guidance_scale"].get<double>();
  return r.guidance.schedule.at(0, r.steps);
}

}  // namespace

json webui_txt2img_response(const GenerationJob& job, const json& request_body) {
  const JobSnapshot s = job.snapshot();
  const std::vector<JobImage> images = job.images();
  const Txt2ImgRequest& r = job.spec().request;
  json b64 = json::array(), seeds = json::array(), infotexts = json::array(), prompts = json::array(),
       negatives = json::array(), subseeds = json::array();
  for (const JobImage& img : images) {
    b64.push_back(base64_encode(img.png));
    seeds.push_back(img.seed);
    subseeds.push_back(img.seed);
    infotexts.push_back(img.infotext);
    prompts.push_back(r.prompts[0]);
    negatives.push_back(r.negative_prompts.empty() ? "" : r.negative_prompts[0]);
  }
  const std::string negative = r.negative_prompts.empty() ? "" : r.negative_prompts[0];
  const json info = {
      {"prompt", r.prompts[0]},
      {"all_prompts", prompts},
      {"negative_prompt", negative},
      {"all_negative_prompts", negatives},
      {"seed", r.seed},
      {"all_seeds", seeds},
      {"subseed", r.seed},
      {"all_subseeds", subseeds},
      {"subseed_strength", 0},
      {"width", s.width},
      {"height", s.height},
      {"sampler_name", webui_sampler_name(s.sampler)},
      {"cfg_scale", scale_of(r)},
      {"steps", r.steps},
      {"batch_size", r.images_per_prompt},
      {"restore_faces", false},
      {"face_restoration_model", nullptr},
      {"sd_model_name", s.model},
      {"sd_model_hash", nullptr},
      {"sd_vae_name", nullptr},
      {"sd_vae_hash", nullptr},
      {"seed_resize_from_w", -1},
      {"seed_resize_from_h", -1},
      {"denoising_strength", nullptr},
      {"extra_generation_params", json::object()},
      {"index_of_first_image", 0},
      {"infotexts", infotexts},
      {"styles", json::array()},
      {"job_timestamp", timestamp(job.created_wall())},
      {"clip_skip", r.text.clip_skip},
      {"is_using_inpainting_conditioning", false},
      {"version", "otter " OTTER_VERSION},
      {"interrupted", s.interrupted},
  };
  // `parameters`: the request as understood, defaults filled in.
  json parameters = request_body.is_object() ? request_body : json::object();
  parameters["prompt"] = r.prompts[0];
  parameters["negative_prompt"] = negative;
  parameters["seed"] = r.seed;
  parameters["steps"] = r.steps;
  parameters["cfg_scale"] = scale_of(r);
  parameters["width"] = s.width;
  parameters["height"] = s.height;
  parameters["batch_size"] = r.images_per_prompt;
  parameters["n_iter"] = job.spec().iterations;
  parameters["sampler_name"] = webui_sampler_name(s.sampler);
  return {{"images", b64}, {"parameters", parameters}, {"info", info.dump()}};
}

json webui_samplers() {
  json out = json::array();
  for (std::string_view name : sampler_names())
    out.push_back({{"name", webui_sampler_name(std::string(name))}, {"aliases", json::array({std::string(name)})},
                   {"options", json::object()}});
  return out;
}

json webui_progress(const GenerationJob* job, bool skip_image) {
  json state = {{"skipped", false},   {"interrupted", false}, {"job", ""},         {"job_count", 0},
                {"job_timestamp", "0"}, {"job_no", 0},          {"sampling_step", 0}, {"sampling_steps", 0}};
  if (!job) return {{"progress", 0.0}, {"eta_relative", 0.0}, {"state", state}, {"current_image", nullptr}, {"textinfo", nullptr}};
  const JobSnapshot s = job->snapshot();
  const bool running = s.state == JobState::Running || s.state == JobState::Queued;
  state["interrupted"] = s.interrupted;
  state["job"] = running ? job->id() : "";
  state["job_count"] = running ? 1 : 0;
  state["job_timestamp"] = timestamp(job->created_wall());
  state["sampling_step"] = s.step;
  state["sampling_steps"] = s.steps;
  json current = nullptr;
  if (!skip_image && running) {
    const std::vector<uint8_t> preview = job->preview_png();
    if (!preview.empty()) current = base64_encode(preview);
  }
  return {{"progress", running ? s.progress : 0.0}, {"eta_relative", running ? s.eta_seconds : 0.0}, {"state", state},
          {"current_image", current}, {"textinfo", nullptr}};
}

json openai_response(const GenerationJob& job) {
  json data = json::array();
  for (const JobImage& img : job.images())
    data.push_back({{"b64_json", base64_encode(img.png)}, {"revised_prompt", job.spec().request.prompts[0]}});
  return {{"created", std::chrono::duration_cast<std::chrono::seconds>(job.created_wall().time_since_epoch()).count()},
          {"data", data}};
}

json job_json(const GenerationJob& job, bool with_images) {
  const JobSnapshot s = job.snapshot();
  json j = {{"id", job.id()},
            {"state", job_state_name(s.state)},
            {"step", s.step},
            {"steps", s.steps},
            {"progress", s.progress},
            {"eta_seconds", s.eta_seconds},
            {"queued_seconds", s.queued_seconds},
            {"run_seconds", s.run_seconds},
            {"model", s.model},
            {"sampler", s.sampler},
            {"width", s.width},
            {"height", s.height},
            {"seed", job.spec().request.seed},
            {"images", s.images},
            {"status_url", "/v1/jobs/" + job.id()},
            {"events_url", "/v1/jobs/" + job.id() + "/events"}};
  if (!s.error.empty()) j["error"] = s.error;
  if (with_images) {
    json images = json::array();
    int k = 0;
    for (const JobImage& img : job.images())
      images.push_back({{"url", "/v1/jobs/" + job.id() + "/images/" + std::to_string(k++) + ".png"},
                        {"seed", img.seed},
                        {"parameters", img.infotext},
                        {"png_base64", base64_encode(img.png)}});
    j["image_list"] = images;
  }
  return j;
}

}  // namespace otter::serve

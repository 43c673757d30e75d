#include "lab_api.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "io/base64.h"
#include "io/png.h"
#include "pipeline/image_output.h"
#include "pipeline/lab_report.h"

namespace otter::serve {
namespace {

using nlohmann::json;

constexpr size_t kMaxExperiments = 16;

std::string png_uri(const Tensor& rgb_in) {
  const Tensor rgb = rgb_in.contiguous();
  return "data:image/png;base64," +
         base64_encode(encode_png(rgb.data<uint8_t>(), static_cast<int>(rgb.dim(1)), static_cast<int>(rgb.dim(0)), {}));
}

}  // namespace

LabSpec parse_lab_request(const json& body, const Limits& limits, const ModelCatalog& models) {
  // The shared fields are the jobs API's (same names, same checks).
  json as_job = body.is_object() ? body : json::object();
  for (const char* lab_only : {"scales", "experiments", "guidance"}) as_job.erase(lab_only);
  const GenerationSpec job = parse_native_job(as_job, limits, models);
  LabSpec spec;
  spec.model = job.model;
  LabSettings settings;
  const Txt2ImgRequest& r = job.request;
  settings.cfg_scale = r.guidance.schedule.at(0, r.steps);
  if (!r.negative_prompts.empty()) settings.negative = r.negative_prompts[0];
  if (body.contains("scales")) {
    const json& s = body["scales"];
    if (!s.is_array() || s.size() > kMaxExperiments) bad_request("scales", cat("'scales' must be a list of at most ", kMaxExperiments, " numbers"));
    settings.scales.clear();
    for (const json& v : s) {
      if (!v.is_number() || !std::isfinite(v.get<double>()) || std::fabs(v.get<double>()) > 100)
        bad_request("scales", "'scales' must hold numbers in -100..100");
      settings.scales.push_back(v.get<float>());
    }
  }
  if (body.contains("experiments")) {
    if (!body["experiments"].is_string()) bad_request("experiments", "'experiments' must be a string like \"cfg,uncond\"");
    std::string cur;
    for (char c : body["experiments"].get<std::string>() + ",") {
      if (c == ',') {
        if (!cur.empty()) settings.only.push_back(cur);
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
  }
  if (body.contains("guidance")) {
    const json& g = body["guidance"];
    if (!g.is_array() || g.size() > kMaxExperiments) bad_request("guidance", cat("'guidance' must be a list of at most ", kMaxExperiments, " recipes"));
    for (const json& v : g) {
      if (!v.is_string()) bad_request("guidance", "'guidance' must hold recipe strings");
      settings.guidance.push_back(v.get<std::string>());
    }
  }
  try {
    spec.request.experiments = lab_experiments(settings);
  } catch (const Error& e) {
    bad_request(body.contains("guidance") ? "guidance" : "experiments", e.what());
  }
  if (spec.request.experiments.size() > kMaxExperiments)
    bad_request("scales", cat(spec.request.experiments.size(), " experiments; at most ", kMaxExperiments));
  spec.request.prompt = r.prompts[0];
  spec.request.steps = r.steps;
  spec.request.sampler = r.sampler;
  spec.request.seed = r.seed;
  spec.request.width = r.width;
  spec.request.height = r.height;
  spec.request.text = r.text;
  return spec;
}

json run_lab_request(LoadedModel& m, LabSpec& spec, const std::string& precision_name) {
  LabRequest& rq = spec.request;
  if (rq.width == 0) rq.width = m.native_size;
  if (rq.height == 0) rq.height = m.native_size;
  const int divisor = 8 * m.model->unet().config().spatial_divisor();
  if (rq.width % divisor || rq.height % divisor)
    bad_request("width", cat("size ", rq.width, "x", rq.height, ": this model needs multiples of ", divisor));
  LabResult result;
  try {
    result = run_lab(*m.model, rq);
  } catch (const Error& e) {
    bad_request("", e.what());
  }
  const int64_t side = std::max<int64_t>(rq.height, rq.width) / 8;
  const int scale = static_cast<int>(std::clamp<int64_t>(64 / side, 1, 8));
  json experiments = json::array();
  for (size_t e = 0; e < rq.experiments.size(); ++e) {
    const LabExperiment& x = rq.experiments[e];
    const LabExperimentResult& r = result.experiments[e];
    const auto [same, as_generate] = lab_as_generate(rq, result, e);
    const std::vector<uint8_t> png = encode_image_png(same, as_generate, m.model->files().name, 0, {{"Precision", precision_name}});
    // Δ's heat maps share one scale per experiment, as in the report.
    const double max_delta = max_delta_norm(r);
    json steps = json::array();
    for (const LabStep& s : r.steps) {
      json step = {{"timestep", s.timestep}, {"scale", s.scale}, {"cosine", s.cosine}, {"norm_cond", s.norm_cond},
                   {"norm_uncond", s.norm_uncond}, {"norm_delta", s.norm_delta}, {"norm_guided", s.norm_guided},
                   {"delta", png_uri(delta_heat_map(s.delta, max_delta))}};
      if (m.preview) {
        step["cond"] = png_uri(m.preview->map.preview(s.x0_cond, scale));
        step["uncond"] = png_uri(m.preview->map.preview(s.x0_uncond, scale));
        step["guided"] = png_uri(m.preview->map.preview(s.x0_guided, scale));
      }
      steps.push_back(step);
    }
    experiments.push_back({{"name", x.name}, {"caption", x.caption}, {"generate_options", x.generate_options()},
                           {"image", "data:image/png;base64," + base64_encode(png)}, {"steps", steps}});
  }
  return {{"prompt", rq.prompt}, {"seed", rq.seed}, {"steps", rq.steps}, {"sampler", result.sampler},
          {"width", rq.width}, {"height", rq.height}, {"model", m.name}, {"unet_rows", result.unet_rows},
          {"rows_asked", result.rows_asked}, {"seconds_denoise", result.seconds_denoise},
          {"preview_error_mean_levels", m.preview ? json(m.preview->held_out.mean_abs) : json()},
          {"experiments", experiments}};
}

}  // namespace otter::serve

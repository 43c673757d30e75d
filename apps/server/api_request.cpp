#include "api_request.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <random>

#include "core/error.h"
#include "guidance/guidance_recipe.h"
#include "io/base64.h"
#include "io/png.h"
#include "pipeline/init_image.h"
#include "pipeline/image_output.h"
#include "sampling/sampler.h"

namespace otter::serve {
namespace {

using nlohmann::json;

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::string get_string(const json& body, const char* name, std::string fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_string()) bad_request(name, cat("'", name, "' must be a string, got ", v->type_name()));
  return v->get<std::string>();
}

int64_t get_int(const json& body, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return fallback;
  int64_t x = 0;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    bad_request(name, cat("'", name, "' is ", v->dump(), "; it must be in ", lo, "..", hi));
  } else if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float() && std::fabs(v->get<double>()) < 9e15 && v->get<double>() == std::trunc(v->get<double>())) {
    x = static_cast<int64_t>(v->get<double>());  // 20.0 is 20 (checked in range first: a cast of 1e300 is undefined)
  } else {
    bad_request(name, cat("'", name, "' must be an integer, got ", v->is_number() ? v->dump() : v->type_name()));
  }
  if (x < lo || x > hi) bad_request(name, cat("'", name, "' is ", x, "; it must be in ", lo, "..", hi));
  return x;
}

double get_number(const json& body, const char* name, double fallback, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) bad_request(name, cat("'", name, "' must be a number, got ", v->type_name()));
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) bad_request(name, cat("'", name, "' is ", x, "; it must be in ", lo, "..", hi));
  return x;
}

void check_object(const json& body) {
  if (!body.is_object()) bad_request("", cat("the request body must be a JSON object, got ", body.type_name()));
}

void check_size(const char* name, int64_t v) {
  if (v % 8 != 0) bad_request(name, cat("'", name, "' is ", v, "; it must be a multiple of 8"));
}

// A sampler by the webui's display name ("DPM++ 2M", "Euler a") or otter's ("dpmpp_2m", "euler_a"),
// with the webui's separate scheduler field ("Karras") folded in.
std::string sampler_of(const std::string& name, const std::string& scheduler, const char* field_name) {
  if (name.empty()) return "";
  std::string otter = sampler_from_webui_name(name);
  if (otter.empty()) {
    std::string known;
    for (std::string_view s : sampler_names()) known += (known.empty() ? "" : ", ") + webui_sampler_name(std::string(s));
    bad_request(field_name, cat("unknown sampler '", name, "'; samplers: ", known));
  }
  if (scheduler.empty() || scheduler == "Automatic" || scheduler == "automatic") return otter;
  if (scheduler == "Karras" || scheduler == "karras") {
    const std::string karras = otter + "_karras";
    for (std::string_view s : sampler_names())
      if (s == karras) return karras;
    if (otter.size() > 7 && otter.ends_with("_karras")) return otter;
    bad_request("scheduler", cat("the Karras schedule is available for DPM++ 2M only; '", name, "' runs its own schedule"));
  }
  bad_request("scheduler", cat("unknown scheduler '", scheduler, "'; otter's are Automatic and Karras"));
}

uint64_t seed_of(const json& body) {
  const int64_t seed = get_int(body, "seed", -1, -1, (int64_t{1} << 53));
  return seed == -1 ? random_seed() : static_cast<uint64_t>(seed);
}

// The fields the webui's txt2img and otter's jobs share: prompt, negative_prompt, steps, the
// sampler (named by `sampler_field`, with scheduler), seed, width, height, batch_size.
void common_fields(const json& body, const Limits& limits, const char* sampler_field, Txt2ImgRequest& r) {
  r.prompts = {get_string(body, "prompt", "")};
  if (const std::string n = get_string(body, "negative_prompt", ""); !n.empty()) r.negative_prompts = {n};
  r.steps = static_cast<int>(get_int(body, "steps", 20, 1, limits.max_steps));
  r.sampler = sampler_of(get_string(body, sampler_field, ""), get_string(body, "scheduler", ""), sampler_field);
  r.seed = seed_of(body);
  r.width = static_cast<int>(get_int(body, "width", 0, 0, limits.max_side));
  r.height = static_cast<int>(get_int(body, "height", 0, 0, limits.max_side));
  check_size("width", r.width);
  check_size("height", r.height);
  r.images_per_prompt = static_cast<int>(get_int(body, "batch_size", 1, 1, limits.max_images));
}

std::string model_of(const std::string& name, const ModelCatalog& models, const char* field_name) {
  if (name.empty()) return "";
  if (!models.has(name)) {
    std::string known;
    for (const std::string& m : models.names()) known += (known.empty() ? "" : ", ") + m;
    throw ApiError{400, cat("no model '", name, "'; this server has: ", known), field_name};
  }
  return name;
}

// cfg_scale, otter's guidance fields (a recipe, or a schedule and rescale) into the request.
void guidance_of(const json& body, Txt2ImgRequest& r, double default_scale, const char* scale_field,
                 const char* recipe_field, const char* schedule_field, const char* rescale_field) {
  const double scale = get_number(body, scale_field, default_scale, -100, 100);
  const std::string recipe = get_string(body, recipe_field, "");
  const std::string schedule = get_string(body, schedule_field, "");
  const double rescale = get_number(body, rescale_field, 0, 0, 1);
  try {
    r.guidance.schedule = schedule.empty() ? GuidanceSchedule::constant(static_cast<float>(scale))
                                           : GuidanceSchedule::parse(schedule);
  } catch (const Error& e) {
    bad_request(schedule_field, e.what());
  }
  try {
    r.guidance.schedule.validate(r.steps);
  } catch (const Error& e) {
    bad_request(schedule_field, e.what());
  }
  r.guidance.rescale = static_cast<float>(rescale);
  if (!recipe.empty()) {
    if (!schedule.empty() || rescale != 0)
      bad_request(recipe_field, cat("'", recipe_field, "' takes the method's own parameters: give the scale and rescale in "
                            "the recipe (e.g. cfg:scale=7,rescale=0.7) instead of '", schedule_field, "' or '",
                            rescale_field, "'"));
    try {
      r.guider = GuidanceRecipe::parse(recipe);
      (void)r.guider->make();
    } catch (const Error& e) {
      bad_request(recipe_field, e.what());
    }
  }
  if (has_composable_prompts(r) && r.guider)
    bad_request(recipe_field, "a prompt with AND (composable prompts) is guided by its own sum of directions; drop the AND or "
                      "the recipe");
}

// A base64 PNG field (a data: URL prefix allowed), decoded, at most limits.max_side a side.
PngImage base64_picture(const json& value, const char* name, const Limits& limits) {
  if (!value.is_string()) bad_request(name, cat("'", name, "' must hold a base64 PNG string"));
  std::string_view text = value.get_ref<const std::string&>();
  if (text.starts_with("data:")) {
    const size_t comma = text.find(',');
    if (comma == std::string_view::npos) bad_request(name, cat("'", name, "' is a data: URL without ','"));
    text.remove_prefix(comma + 1);
  }
  const std::optional<std::vector<uint8_t>> bytes = base64_decode(text);
  if (!bytes) bad_request(name, cat("'", name, "' is not base64"));
  PngImage picture;
  try {
    picture = decode_png(bytes->data(), bytes->size(), name);
  } catch (const Error& e) {
    bad_request(name, e.what());
  }
  if (picture.width > limits.max_side || picture.height > limits.max_side)
    bad_request(name, cat("the picture is ", picture.width, "x", picture.height, "; at most ", limits.max_side, " pixels a side"));
  return picture;
}

}  // namespace

std::vector<LoraSpec> take_lora_tags(std::string& prompt, const ModelCatalog& models, const char* field_name) {
  std::vector<LoraSpec> loras;
  std::string rest;
  size_t at = 0;
  while (true) {
    const size_t open = prompt.find("<lora:", at);
    const size_t close = open == std::string::npos ? std::string::npos : prompt.find('>', open);
    if (close == std::string::npos) {
      rest += prompt.substr(at);
      break;
    }
    rest += prompt.substr(at, open - at);
    const std::string tag = prompt.substr(open + 6, close - open - 6);
    const size_t colon = tag.find(':');
    const std::string name = tag.substr(0, colon);
    double weight = 1.0;
    if (colon != std::string::npos) {
      const std::string w = tag.substr(colon + 1);
      const auto r = std::from_chars(w.data(), w.data() + w.size(), weight);
      if (r.ec != std::errc() || r.ptr != w.data() + w.size() || !std::isfinite(weight))
        bad_request(field_name, cat("<lora:", tag, ">: '", w, "' is not a weight; write <lora:NAME:0.8>"));
    }
    const std::optional<std::filesystem::path> path = models.lora(name);
    if (!path) {
      std::string known;
      for (const std::string& n : models.lora_names()) known += (known.empty() ? "" : ", ") + n;
      bad_request(field_name, cat("<lora:", tag, ">: no LoRA '", name, "' on this server",
                          known.empty() ? std::string(" (start it with --loras DIR)") : cat("; it has: ", known)));
    }
    loras.push_back({*path, weight});
    at = close + 1;
  }
  prompt = rest;
  return loras;
}

uint64_t random_seed() {
  static std::mutex m;
  static std::random_device device;
  std::lock_guard lock(m);
  return device();
}

json parse_body(const std::string& body) {
  try {
    return json::parse(body);
  } catch (const json::exception& e) {  // syntax errors, and numbers beyond a double (out_of_range, found by fuzzing)
    throw ApiError{400, cat("the request body is not valid JSON: ", e.what()), ""};
  }
}

GenerationSpec parse_webui_txt2img(const json& body, const Limits& limits, const ModelCatalog& models,
                                   const std::string& webui_model) {
  check_object(body);
  GenerationSpec spec;
  spec.api = "webui";
  Txt2ImgRequest& r = spec.request;
  // The webui's older clients name the sampler sampler_index.
  common_fields(body, limits, field(body, "sampler_name") || !field(body, "sampler_index") ? "sampler_name" : "sampler_index", r);
  spec.iterations = static_cast<int>(get_int(body, "n_iter", 1, 1, limits.max_images));
  if (r.images_per_prompt * spec.iterations > limits.max_images)
    bad_request("n_iter", cat("batch_size ", r.images_per_prompt, " x n_iter ", spec.iterations, " = ",
                      r.images_per_prompt * spec.iterations, " images; at most ", limits.max_images, " per request"));
  r.sampler_options.eta = static_cast<float>(get_number(body, "eta", 0, 0, 1));
  guidance_of(body, r, 7.0, "cfg_scale", "otter_guidance", "otter_cfg_schedule", "otter_rescale");
  spec.model = webui_model;
  spec.loras = take_lora_tags(r.prompts[0], models, "prompt");
  if (const json* o = field(body, "override_settings")) {
    if (!o->is_object()) bad_request("override_settings", "'override_settings' must be an object");
    spec.model = model_of(get_string(*o, "sd_model_checkpoint", webui_model), models, "override_settings.sd_model_checkpoint");
    r.text.clip_skip = static_cast<int>(get_int(*o, "CLIP_stop_at_last_layers", 1, 1, 12));
  }
  return spec;
}

namespace {

// The init picture and mask of a request, named by each API's fields.
struct InitFields {
  const char* strength;      // "denoising_strength" / "strength"
  const char* mask_blur;     // "mask_blur"
  const char* mask_invert;   // "inpainting_mask_invert" / "mask_invert"
};

// Sets r.init_image from `picture` (and `mask`): the size is r's when given (the picture resampled
// to it), else the picture's rounded down to multiples of 8 (diffusers' rule).
void set_init_image(const json& body, PngImage picture, std::optional<PngImage> mask, const InitFields& f,
                    Txt2ImgRequest& r) {
  if (mask && (mask->width != picture.width || mask->height != picture.height))
    bad_request("mask", cat("the mask is ", mask->width, "x", mask->height, " but the picture ", picture.width, "x",
                    picture.height, "; send a mask of the picture's size"));
  const double strength = get_number(body, f.strength, 0.75, 0, 1);
  try {
    (void)img2img_first_step(r.steps, strength);
  } catch (const Error& e) {
    bad_request(f.strength, e.what());
  }
  const int w = r.width ? r.width : std::max(8, picture.width / 8 * 8);
  const int h = r.height ? r.height : std::max(8, picture.height / 8 * 8);
  if (w != picture.width || h != picture.height) {
    picture = resize_picture(picture, w, h);
    if (mask) mask = resize_picture(*mask, w, h);
  }
  r.width = w;
  r.height = h;
  r.init_image = InitImage{.pixels = picture_to_vae_input(picture), .strength = strength};
  if (mask) {
    r.init_image->mask = mask_from_picture(*mask, get_int(body, f.mask_invert, 0, 0, 1) == 1);
    r.init_image->mask_blur = static_cast<double>(get_int(body, f.mask_blur, 4, 0, 64));
  }
}

}  // namespace

GenerationSpec parse_webui_img2img(const json& body, const Limits& limits, const ModelCatalog& models,
                                   const std::string& webui_model) {
  check_object(body);
  if (get_int(body, "resize_mode", 0, 0, 3) != 0)
    bad_request("resize_mode", "only resize_mode 0 (just resize) is served: the picture is resampled to width x height");
  const json* images = field(body, "init_images");
  if (!images || !images->is_array() || images->empty())
    bad_request("init_images", "'init_images' must be a list holding one base64 PNG");
  if (images->size() > 1)
    bad_request("init_images", cat("'init_images' has ", images->size(), " pictures; otter starts every image from one"));
  PngImage picture = base64_picture((*images)[0], "init_images", limits);
  std::optional<PngImage> mask;
  if (const json* m = field(body, "mask")) {
    mask = base64_picture(*m, "mask", limits);
    if (get_int(body, "inpainting_fill", 1, 0, 3) != 1)
      bad_request("inpainting_fill", "only inpainting_fill 1 (original: the masked part starts from the picture) is served");
    if (const json* full = field(body, "inpaint_full_res"); full && !(full->is_boolean() ? !full->get<bool>() : *full == 0))
      bad_request("inpaint_full_res", "inpainting at full resolution (a crop around the mask) is not served; send false");
  }
  GenerationSpec spec = parse_webui_txt2img(body, limits, models, webui_model);
  set_init_image(body, std::move(picture), std::move(mask), {"denoising_strength", "mask_blur", "inpainting_mask_invert"},
                 spec.request);
  return spec;
}

GenerationSpec parse_openai_generation(const json& body, const Limits& limits, const ModelCatalog& models) {
  check_object(body);
  GenerationSpec spec;
  spec.api = "openai";
  Txt2ImgRequest& r = spec.request;
  const json* prompt = field(body, "prompt");
  if (!prompt) bad_request("prompt", "'prompt' is required");
  r.prompts = {get_string(body, "prompt", "")};
  if (r.prompts[0].empty()) bad_request("prompt", "'prompt' must not be empty");
  spec.loras = take_lora_tags(r.prompts[0], models, "prompt");
  r.images_per_prompt = static_cast<int>(get_int(body, "n", 1, 1, limits.max_images));
  const std::string size = get_string(body, "size", "auto");
  if (size != "auto") {
    int w = 0, h = 0;
    char x = 0, extra = 0;
    if (std::sscanf(size.c_str(), "%d%c%d%c", &w, &x, &h, &extra) != 3 || x != 'x' || w < 8 || h < 8 ||
        w > limits.max_side || h > limits.max_side || w % 8 || h % 8)
      bad_request("size", cat("'size' is '", size, "'; give WIDTHxHEIGHT in pixels, multiples of 8 up to ", limits.max_side,
                      " (e.g. 512x512), or auto for the model's own size"));
    r.width = w;
    r.height = h;
  }
  const std::string format = get_string(body, "response_format", "b64_json");
  if (format != "b64_json")
    bad_request("response_format", cat("'response_format' '", format, "' is not served: this server returns b64_json only "
                               "(it keeps no image files to link to)"));
  spec.model = model_of(get_string(body, "model", ""), models, "model");
  // otter's own fields, for clients that want them.
  if (const std::string n = get_string(body, "negative_prompt", ""); !n.empty()) r.negative_prompts = {n};
  r.steps = static_cast<int>(get_int(body, "steps", 20, 1, limits.max_steps));
  r.seed = seed_of(body);
  guidance_of(body, r, 7.5, "guidance_scale", "guidance", "cfg_schedule", "rescale");
  return spec;
}

GenerationSpec parse_native_job(const json& body, const Limits& limits, const ModelCatalog& models) {
  check_object(body);
  GenerationSpec spec;
  spec.api = "jobs";
  Txt2ImgRequest& r = spec.request;
  common_fields(body, limits, "sampler", r);
  r.sampler_options.eta = static_cast<float>(get_number(body, "eta", 0, 0, 1));
  r.text.clip_skip = static_cast<int>(get_int(body, "clip_skip", 1, 1, 12));
  guidance_of(body, r, 7.5, "cfg_scale", "guidance", "cfg_schedule", "rescale");
  spec.model = model_of(get_string(body, "model", ""), models, "model");
  spec.loras = take_lora_tags(r.prompts[0], models, "prompt");
  // Image to image and inpainting: init_image (a base64 PNG), strength, mask, mask_blur, mask_invert.
  if (const json* init = field(body, "init_image")) {
    PngImage picture = base64_picture(*init, "init_image", limits);
    std::optional<PngImage> mask;
    if (const json* m = field(body, "mask")) mask = base64_picture(*m, "mask", limits);
    set_init_image(body, std::move(picture), std::move(mask), {"strength", "mask_blur", "mask_invert"}, r);
  } else if (field(body, "mask")) {
    bad_request("mask", "'mask' says what to repaint in an 'init_image'; send the picture too");
  }
  return spec;
}

}  // namespace otter::serve

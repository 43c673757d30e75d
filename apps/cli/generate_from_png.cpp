// `otter generate --from IMAGE.png`: the image's webui parameters become the defaults of every
// option not given on the command line, so the same command reproduces the image (bit for bit on
// the same machine and precision) or varies one thing (--seed, --steps, --guidance …).
#include <charconv>
#include <optional>
#include <string>

#include "core/error.h"
#include "core/number_text.h"
#include "generate_args.h"
#include "io/generation_parameters.h"
#include "io/png.h"
#include "pipeline/default_model.h"
#include "pipeline/image_output.h"

namespace otter::cli {
namespace {

std::optional<std::string> extra(const GenerationParameters& p, const std::string& key) {
  for (const auto& [k, v] : p.extra)
    if (k == key) return v;
  return std::nullopt;
}

template <class T>
T number(const std::string& from, const std::string& key, const std::string& text) {
  T value{};
  const auto r = std::from_chars(text.data(), text.data() + text.size(), value);
  OTTER_CHECK(r.ec == std::errc() && r.ptr == text.data() + text.size(), from, ": parameter '", key, "' is '", text,
              "', not a number");
  return value;
}

}  // namespace

void apply_png_parameters(GenerateArgs& a, const std::function<bool(const std::string&)>& given) {
  const PngImage image = read_png(a.from);
  const std::optional<std::string> text = image.find_text("parameters");
  OTTER_CHECK(text.has_value(), a.from, " has no generation parameters (no 'parameters' text chunk); --from reads "
              "images written by otter generate or the webui");
  const GenerationParameters p = parse_parameters(*text);

  if (!given("prompt")) a.prompts = {p.prompt};
  if (!given("negative") && !p.negative_prompt.empty()) a.negatives = {p.negative_prompt};
  if (!given("steps") && p.steps) a.steps = *p.steps;
  if (!given("seed") && p.seed) {
    a.seed = static_cast<int64_t>(*p.seed);
    // One image of a batch: its noise is its row of the batch's draws. A different seed, prompt
    // count or image count starts a batch of its own.
    const std::optional<std::string> size = extra(p, "Batch size"), pos = extra(p, "Batch pos");
    if (size && pos && !given("images")) {
      a.noise_batch_rows = number<int64_t>(a.from, "Batch size", *size);
      a.noise_first_row = number<int64_t>(a.from, "Batch pos", *pos);
    }
  }
  if (!given("width") && p.width) a.width = *p.width;
  if (!given("height") && p.height) a.height = *p.height;
  if (!given("sampler") && !p.sampler.empty()) {
    a.sampler = sampler_from_webui_name(p.sampler);
    OTTER_CHECK(!a.sampler.empty(), a.from, ": sampler '", p.sampler, "' is not one otter has; give one with --sampler");
  }
  // Guidance: the PNG's own, unless the command line chooses any of it.
  if (!given("guidance") && !given("cfg-scale") && !given("cfg-schedule") && !given("rescale")) {
    if (const auto recipe = extra(p, "Guidance")) {
      a.guidance = *recipe;
    } else {
      if (const auto schedule = extra(p, "CFG schedule")) a.cfg_schedule = *schedule;
      else if (p.cfg_scale) a.cfg_scale = shortest_text(*p.cfg_scale);
      if (const auto phi = extra(p, "CFG Rescale phi")) a.rescale = number<float>(a.from, "CFG Rescale phi", *phi);
    }
  }
  if (!given("eta"))
    if (const auto eta = extra(p, "Eta")) a.eta = number<double>(a.from, "Eta", *eta);
  if (!given("clip-skip"))
    if (const auto skip = extra(p, "Clip skip")) a.clip_skip = number<int>(a.from, "Clip skip", *skip);
  if (!given("long-prompt"))
    if (const auto mode = extra(p, "Long prompt")) a.long_prompt = *mode;
  if (!given("vae-tile") && extra(p, "VAE tiles")) a.vae_tile = true;
  if (!given("emphasis"))
    if (const auto emphasis = extra(p, "Emphasis")) a.emphasis = *emphasis == "None" ? "none" : "original";
  // LoRAs: the PNG names the files and weights; the files themselves must be given again.
  if (const auto loras = extra(p, "LoRA"))
    OTTER_CHECK(given("lora"), a.from, " was made with LoRA ", *loras, "; give the same files with --lora FILE:WEIGHT");
  // Image to image: the picture is not in the PNG (as in the webui); its strength is.
  if (const auto strength = extra(p, "Denoising strength")) {
    const auto init = extra(p, "Init image");
    OTTER_CHECK(given("init-image"), a.from, " was made from an init image", init ? cat(" (", *init, ")") : std::string(),
                "; give the same picture with --init-image");
    if (!given("strength")) a.strength = number<double>(a.from, "Denoising strength", *strength);
  }
  if (const auto mask = extra(p, "Mask")) {
    OTTER_CHECK(given("mask"), a.from, " was inpainted with the mask ", *mask, "; give it with --mask");
    if (!given("mask-blur"))
      if (const auto blur = extra(p, "Mask blur")) a.mask_blur = number<double>(a.from, "Mask blur", *blur);
    if (!given("mask-invert") && extra(p, "Mask mode") == std::optional<std::string>("Inpaint not masked")) a.mask_invert = true;
  }
  if (!given("precision"))
    if (const auto precision = extra(p, "Precision")) a.precision = *precision;
  if (!given("model") && !p.model.empty() && p.model != kDefaultModelName)
    throw Error(cat(a.from, " was made with the model '", p.model, "'; give its folder or file with -m (otter finds only "
                    "the bundled ", kDefaultModelName, " by itself)"));
}

}  // namespace otter::cli

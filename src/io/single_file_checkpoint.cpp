#include "io/single_file_checkpoint.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "io/component_tensors.h"
#include "io/ldm_key_map.h"
#include "io/remapped_source.h"

namespace otter {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool any_key_starts_with(const std::vector<std::string>& keys, std::string_view prefix) {
  for (const std::string& k : keys)
    if (k.starts_with(prefix)) return true;
  return false;
}

// Explains what a .safetensors without the SD single-file layout most likely is.
[[noreturn]] void throw_not_a_checkpoint(const fs::path& path, const std::vector<std::string>& keys) {
  std::string what;
  if (any_key_starts_with(keys, "conditioner.embedders."))
    what = "it looks like an SDXL checkpoint (conditioner.embedders.*), which otter does not run";
  else if (any_key_starts_with(keys, "lora_") || any_key_starts_with(keys, "lora_unet_"))
    what = "it looks like a LoRA, not a full model";
  else if (any_key_starts_with(keys, "down_blocks.") || any_key_starts_with(keys, "text_model.") ||
           any_key_starts_with(keys, "encoder.down_blocks."))
    what = "it looks like one component of a diffusers folder; pass the folder that holds model_index.json";
  else if (any_key_starts_with(keys, "encoder.down.") || any_key_starts_with(keys, "decoder.up."))
    what = "it looks like a standalone VAE, not a full model";
  else
    what = "it has none of the expected tensor names";
  throw Error(cat("'", path.string(), "' is not a Stable Diffusion 1.x/2.x checkpoint: ", what,
                  ". otter expects a diffusers folder or an original single file with model.diffusion_model.*, ",
                  "first_stage_model.* and cond_stage_model.* tensors"));
}

struct TextLayout {
  ModelFamily family;
  std::string file_prefix;  // prefix that the key map adds
  bool text_model_level = true;
};

TextLayout detect_text_layout(const fs::path& path, const std::vector<std::string>& keys) {
  const std::string clip(kLdmClipPrefix), openclip(kLdmOpenClipPrefix);
  if (any_key_starts_with(keys, clip + "text_model.")) return {ModelFamily::SD1, clip, true};
  if (any_key_starts_with(keys, clip + "embeddings.") || any_key_starts_with(keys, clip + "encoder."))
    return {ModelFamily::SD1, clip, false};  // saved with transformers < 4.?; no "text_model." level
  if (any_key_starts_with(keys, openclip)) return {ModelFamily::SD2, openclip, true};
  throw Error(cat("'", path.string(), "' has no text encoder: expected cond_stage_model.transformer.text_model.* ",
                  "(SD 1.x) or cond_stage_model.model.* (SD 2.x) tensors"));
}

std::map<std::string, Shape> shapes_of(const std::vector<TensorSpec>& specs) {
  std::map<std::string, Shape> out;
  for (const TensorSpec& s : specs) out[s.name] = s.shape;
  return out;
}

// A component's source: the mapped tensors, plus every other key under `component_prefix`
// that the map does not read and `known_unused` does not excuse (reported as unexpected by
// the tensor check).
template <class KnownUnused>
std::shared_ptr<TensorSource> component_source(const std::shared_ptr<const SafetensorsFile>& file,
                                               const std::vector<std::string>& keys, const LdmKeyMap& map,
                                               const std::vector<TensorSpec>& specs, std::string_view component_prefix,
                                               const std::string& origin, KnownUnused known_unused) {
  std::set<std::string> read;
  for (const auto& [name, ref] : map) read.insert(ref.key);
  std::vector<std::string> passthrough;
  for (const std::string& k : keys)
    if (k.starts_with(component_prefix) && !read.count(k) && !known_unused(k)) passthrough.push_back(k);
  return std::make_shared<RemappedSource>(file, make_remap_entries(*file, map, shapes_of(specs)), std::move(passthrough),
                                          origin);
}

}  // namespace

ModelFiles open_single_file(const fs::path& path, const ModelOptions& opts) {
  auto file = std::make_shared<const SafetensorsFile>(SafetensorsFile::open(path));
  const std::vector<std::string> keys = file->names();
  if (!any_key_starts_with(keys, kLdmUnetPrefix)) throw_not_a_checkpoint(path, keys);
  OTTER_CHECK(any_key_starts_with(keys, kLdmVaePrefix), "'", path.string(), "' has a UNet but no VAE ",
              "(first_stage_model.* tensors); otter needs a checkpoint with its VAE baked in");
  const TextLayout text = detect_text_layout(path, keys);

  ModelFiles m;
  m.path = path;
  m.layout = CheckpointLayout::SingleFile;
  m.family = text.family;
  m.name = path.stem().string();
  m.notes.push_back(cat("detected ", family_name(text.family), " (",
                        text.family == ModelFamily::SD1 ? "CLIP ViT-L text encoder, cond_stage_model.transformer.*"
                                                        : "OpenCLIP text encoder, cond_stage_model.model.*",
                        ")"));

  m.configs = builtin_configs(text.family);
  if (opts.config.empty())
    m.notes.push_back(cat("architecture: built-in ", text.family == ModelFamily::SD1 ? "SD 1.5" : "SD 2.1",
                          " configs (pass --config for other architectures)"));
  const std::vector<ConfigKind> replaced = apply_config_overrides(m.configs, opts.config, m.notes);
  const bool scheduler_given = std::find(replaced.begin(), replaced.end(), ConfigKind::Scheduler) != replaced.end();
  const ModelFamily config_family = family_from_text_encoder_config(m.configs.text_encoder);
  OTTER_CHECK(config_family == text.family, "'", path.string(), "' holds an ", family_name(text.family),
              " text encoder but the text encoder config from --config describes ", family_name(config_family),
              " (hidden_act ", m.configs.text_encoder.value("hidden_act", std::string("?")),
              "); pass the config of the matching model");

  // The file cannot tell 768-v from 512-base SD 2.x models (same tensors); the built-in
  // config is SD 2.1 768-v's, so the prediction type is a guess unless the user chose.
  if (text.family == ModelFamily::SD2 && !opts.prediction && !scheduler_given)
    m.notes.push_back("assuming v-prediction (SD 2.x 768-v models): use --prediction eps for SD 2.x base (512) models");

  const std::string p = path.string();
  const auto never = [](const std::string&) { return false; };

  const std::vector<TensorSpec> unet_specs = unet_tensor_specs(m.configs.unet);
  m.unet = component_source(file, keys, unet_ldm_key_map(m.configs.unet), unet_specs, kLdmUnetPrefix,
                            p + " (UNet: model.diffusion_model.*)", never);
  const std::vector<TensorSpec> vae_specs = vae_tensor_specs(m.configs.vae);
  // Some files keep the autoencoder's training loss (LPIPS, discriminator) beside it.
  const std::string vae_loss = std::string(kLdmVaePrefix) + "loss.";
  const auto is_vae_loss = [&vae_loss](const std::string& k) { return k.starts_with(vae_loss); };
  m.vae = component_source(file, keys, vae_ldm_key_map(m.configs.vae), vae_specs, kLdmVaePrefix,
                           p + " (VAE: first_stage_model.*)", is_vae_loss);
  if (const auto n = std::count_if(keys.begin(), keys.end(), is_vae_loss); n > 0)
    m.notes.push_back(cat("ignored ", n, " VAE training-loss tensor(s) (", vae_loss, "*)"));

  const std::vector<TensorSpec> text_specs = text_encoder_tensor_specs(m.configs.text_encoder);
  if (text.family == ModelFamily::SD1) {
    LdmKeyMap map = clip_ldm_key_map(m.configs.text_encoder, text.file_prefix, text.text_model_level);
    // The position_ids buffer keeps its transformers name, as in a diffusers folder.
    const std::string ids = text.file_prefix + (text.text_model_level ? "text_model." : "") + "embeddings.position_ids";
    if (file->has(ids)) map["text_model.embeddings.position_ids"] = LdmTensorRef{ids, -1, -1};
    m.text_encoder = component_source(file, keys, map, text_specs, kLdmTextPrefix,
                                      p + " (text encoder: cond_stage_model.transformer.*)", never);
  } else {
    const json& tc = m.configs.text_encoder;
    const auto unused = [&tc](const std::string& k) { return openclip_key_is_unused(k, tc); };
    m.text_encoder = component_source(file, keys, openclip_ldm_key_map(tc), text_specs, kLdmTextPrefix,
                                      p + " (text encoder: cond_stage_model.model.*, OpenCLIP)", unused);
    int64_t blocks = 0;
    while (file->has(cat(kLdmOpenClipPrefix, "transformer.resblocks.", blocks, ".ln_1.weight"))) ++blocks;
    const int64_t used = tc.value("num_hidden_layers", int64_t{0});
    if (blocks > used)
      m.notes.push_back(cat("text encoder: ", used, " of the ", blocks, " OpenCLIP resblocks are used (SD 2.x ",
                            "conditions on the penultimate layer); text_projection and logit_scale are unused"));
  }

  // Training leftovers beside the three components: EMA copies, the noise schedule buffers, ...
  size_t outside = 0;
  std::set<std::string> kinds;  // their top-level names
  for (const std::string& k : keys) {
    if (k.starts_with(kLdmUnetPrefix) || k.starts_with(kLdmVaePrefix) || k.starts_with(kLdmTextPrefix)) continue;
    ++outside;
    kinds.insert(k.substr(0, k.find('.')));
  }
  if (outside > 0) {
    std::string list;
    size_t shown = 0;
    for (auto it = kinds.begin(); it != kinds.end() && shown < 4; ++it, ++shown) list += (shown ? ", " : "") + *it;
    if (kinds.size() > shown) list += ", ...";
    m.notes.push_back(cat("ignored ", outside, " tensor(s) that are not part of the model (", list, ")"));
  }
  return m;
}

}  // namespace otter

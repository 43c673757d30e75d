#include "io/model_files.h"

#include <algorithm>

#include "core/error.h"
#include "io/checkpoint_format.h"
#include "io/json_file.h"
#include "io/component_tensors.h"
#include "io/ldm_key_map.h"
#include "io/remapped_source.h"
#include "io/safetensors_source.h"
#include "io/single_file_checkpoint.h"

namespace otter {

namespace fs = std::filesystem;
using nlohmann::json;

std::string parse_prediction_type(const std::string& text) {
  if (text == "eps" || text == "epsilon") return "epsilon";
  if (text == "v" || text == "v_prediction" || text == "v-prediction") return "v_prediction";
  throw Error(cat("unknown prediction type '", text, "': use eps (epsilon, SD 1.x and SD 2.x base models) or v ",
                  "(v_prediction, SD 2.x 768-v models)"));
}

bool is_buffer_tensor(const std::string& name) {
  const std::string_view suffix = "position_ids";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void check_component_tensors(const TensorSource& source, const std::vector<TensorSpec>& specs,
                             const std::string& component) {
  // Missing and wrong-shaped tensors are collected and reported together: which ones they are
  // tells a different architecture from a damaged file.
  const auto* remapped = dynamic_cast<const RemappedSource*>(&source);
  std::vector<std::string> missing, reshaped;
  for (const TensorSpec& s : specs) {
    if (!source.has(s.name)) {
      std::string line = cat("missing ", s.name, " ", s.shape.str());
      if (remapped)
        if (auto key = remapped->source_key(s.name)) line += cat(" (stored as ", *key, ")");
      missing.push_back(line);
      continue;
    }
    const Shape actual = source.get(s.name).shape();
    if (actual != s.shape) reshaped.push_back(cat(s.name, " has shape ", actual.str(), ", expected ", s.shape.str()));
  }
  if (!missing.empty() || !reshaped.empty()) {
    std::string list;
    for (const auto* group : {&reshaped, &missing}) {
      for (size_t i = 0; i < group->size() && i < 5; ++i) list += "\n  " + (*group)[i];
      if (group->size() > 5) list += cat("\n  ... and ", group->size() - 5, " more");
    }
    throw Error(cat(source.origin(), " does not match the ", component, " config: of its ", specs.size(),
                    " tensors, ", missing.size(), " are missing and ", reshaped.size(),
                    " have another shape (wrong model family, a partial file, or a --config that does not ",
                    "describe this model?):", list));
  }
  Weights weights(source);
  for (const TensorSpec& s : specs) weights.get(s.name, s.shape);
  weights.check_all_used({"position_ids"});
}

namespace {

// The weights file of one diffusers component: <base>.safetensors, or <base>.<variant>.safetensors
// when that variant is asked for or is the only one.
fs::path pick_weights_file(const fs::path& dir, const std::string& base, const ModelOptions& opts,
                           std::vector<std::string>& notes) {
  const fs::path plain = dir / (base + ".safetensors");
  const std::string variant = opts.variant.value_or("fp16");
  const fs::path variant_file = dir / (base + "." + variant + ".safetensors");
  const std::string comp = dir.filename().string();
  if (opts.variant) {
    if (fs::is_regular_file(variant_file)) return variant_file;
    if (fs::is_regular_file(plain)) {
      notes.push_back(cat(comp, ": no ", variant, " variant (", variant_file.filename().string(), "), using ",
                          plain.filename().string()));
      return plain;
    }
  } else {
    if (fs::is_regular_file(plain)) return plain;
    if (fs::is_regular_file(variant_file)) {
      notes.push_back(cat(comp, ": using ", variant_file.filename().string(), " (the only weights there)"));
      return variant_file;
    }
  }
  for (const char* ext : {".bin", ".ckpt", ".pt", ".pth"})
    if (fs::is_regular_file(dir / (base + ext)))
      throw Error(cat(pickle_refusal_message(dir / (base + ext), "a diffusers .bin weights file"),
                      "\nFor a whole diffusers folder, re-save it once with safetensors:\n  python -c \"from diffusers ",
                      "import StableDiffusionPipeline as P; P.from_pretrained('", dir.parent_path().string(),
                      "').save_pretrained('", dir.parent_path().string(), "-safetensors', safe_serialization=True)\""));
  if (fs::is_regular_file(dir / (base + ".safetensors.index.json")))
    throw Error(cat("'", dir.string(), "' holds sharded weights (", base, ".safetensors.index.json); otter reads one ",
                    base, ".safetensors per component. Merge the shards into one file."));
  throw Error(cat("no weights in '", dir.string(), "': expected ", plain.filename().string(),
                  opts.variant ? cat(" or ", variant_file.filename().string()) : std::string(),
                  ". Is the download complete?"));
}

// A diffusers VAE: current names, or legacy attention names remapped onto the current ones.
std::shared_ptr<TensorSource> open_vae_weights(const fs::path& file_path, const json& vae_config,
                                               std::vector<std::string>& notes) {
  auto file = std::make_shared<const SafetensorsFile>(SafetensorsFile::open(file_path));
  const LdmKeyMap legacy = vae_legacy_attention_key_map(vae_config);
  const bool uses_legacy = std::any_of(legacy.begin(), legacy.end(), [&](const auto& kv) {
    return file->has(kv.second.key) && !file->has(kv.first);
  });
  if (!uses_legacy) return std::make_shared<SafetensorsSource>(file_path);
  notes.push_back("VAE uses the legacy attention names query/key/value/proj_attn; read as to_q/to_k/to_v/to_out.0");
  LdmKeyMap all;
  std::vector<std::string> passthrough;
  for (const std::string& n : file->names()) all[n] = LdmTensorRef{n, -1, -1};
  for (const auto& [name, ref] : legacy) {
    all.erase(ref.key);
    all[name] = ref;
  }
  std::map<std::string, Shape> expected;
  for (const TensorSpec& s : vae_tensor_specs(vae_config)) expected[s.name] = s.shape;
  auto entries = make_remap_entries(*file, all, expected);
  return std::make_shared<RemappedSource>(file, std::move(entries), passthrough, file_path.string());
}

void require_config(const ModelConfigs& c, ConfigKind kind, const fs::path& where) {
  if (!c.get(kind).is_null()) return;
  throw Error(cat("'", where.string(), "' has no ", config_kind_name(kind), " config (",
                  kind == ConfigKind::Scheduler ? "scheduler/scheduler_config.json"
                  : kind == ConfigKind::TextEncoder ? "text_encoder/config.json"
                  : kind == ConfigKind::Unet ? "unet/config.json" : "vae/config.json",
                  "); restore it from the model's download or pass --config with a folder or file that has it"));
}

// "CLIP ViT-L text encoder, quick_gelu" for SD's own sizes; the sizes themselves otherwise (the
// bundled demo model's is CLIP-shaped, hidden 128, 3 layers — not ViT-L).
std::string text_encoder_summary(const nlohmann::json& config, ModelFamily family) {
  const int hidden = config.value("hidden_size", 0), layers = config.value("num_hidden_layers", 0);
  if (family == ModelFamily::SD1 && hidden == 768 && layers == 12) return "CLIP ViT-L text encoder, quick_gelu";
  if (family != ModelFamily::SD1 && hidden == 1024) return "OpenCLIP ViT-H text encoder, gelu";
  return cat(family == ModelFamily::SD1 ? "CLIP text encoder, quick_gelu" : "OpenCLIP text encoder, gelu", ", hidden ",
             hidden, ", ", layers, " layers");
}

ModelFiles open_diffusers_folder(const fs::path& dir, const ModelOptions& opts) {
  const fs::path index_path = dir / "model_index.json";
  if (!fs::is_regular_file(index_path))
    throw Error(cat("'", dir.string(), "' is a folder without model_index.json, so not a diffusers model folder. ",
                    "Pass the folder that holds model_index.json, unet/, vae/, text_encoder/ and scheduler/, or a ",
                    "single-file .safetensors checkpoint"));
  const json index = read_json_file(index_path, "model index");
  const std::string pipeline = index.value("_class_name", std::string("?"));
  const bool sd_pipeline = pipeline.rfind("StableDiffusion", 0) == 0 && pipeline.find("XL") == std::string::npos &&
                           pipeline.rfind("StableDiffusion3", 0) != 0;
  OTTER_CHECK(sd_pipeline, "'", index_path.string(), "' describes a ", pipeline, "; otter runs SD 1.x/2.x models ",
              "(StableDiffusionPipeline)");

  ModelFiles m;
  m.path = dir;
  m.layout = CheckpointLayout::DiffusersFolder;
  m.name = fs::absolute(dir).lexically_normal().filename().string();
  if (m.name.empty()) m.name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  m.configs = read_diffusers_configs(dir);
  apply_config_overrides(m.configs, opts.config, m.notes);
  for (ConfigKind k : {ConfigKind::TextEncoder, ConfigKind::Unet, ConfigKind::Vae, ConfigKind::Scheduler})
    require_config(m.configs, k, dir);

  for (const char* comp : {"text_encoder", "unet", "vae"})
    OTTER_CHECK(fs::is_directory(dir / comp), "'", dir.string(), "' has no ", comp, "/ folder; the download is ",
                "incomplete (a diffusers SD folder has text_encoder/, unet/, vae/, scheduler/ and tokenizer/)");
  m.text_encoder = std::make_shared<SafetensorsSource>(pick_weights_file(dir / "text_encoder", "model", opts, m.notes));
  m.unet = std::make_shared<SafetensorsSource>(pick_weights_file(dir / "unet", "diffusion_pytorch_model", opts, m.notes));
  m.vae = open_vae_weights(pick_weights_file(dir / "vae", "diffusion_pytorch_model", opts, m.notes), m.configs.vae,
                           m.notes);
  if (pipeline != "StableDiffusionPipeline")
    m.notes.push_back(cat("model_index.json names ", pipeline, "; its components are loaded as a text-to-image model"));
  m.family = family_from_text_encoder_config(m.configs.text_encoder);
  m.notes.insert(m.notes.begin(), cat("detected ", family_name(m.family), " (",
                                      text_encoder_summary(m.configs.text_encoder, m.family), ")"));
  return m;
}

}  // namespace

ModelFiles open_model(const fs::path& path, const ModelOptions& opts) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st))
    throw Error(cat("model '", path.string(), "' does not exist; pass a diffusers folder or a .safetensors checkpoint"));

  ModelFiles m;
  if (fs::is_directory(st)) {
    m = open_diffusers_folder(path, opts);
  } else {
    refuse_pickle_checkpoint(path);
    m = open_single_file(path, opts);
  }

  // Complete configs: every consumer sees the same values diffusers would use.
  m.configs.text_encoder = with_defaults(ConfigKind::TextEncoder, m.configs.text_encoder);
  m.configs.unet = with_defaults(ConfigKind::Unet, m.configs.unet);
  m.configs.vae = with_defaults(ConfigKind::Vae, m.configs.vae);
  if (m.configs.special_tokens.is_null())
    m.configs.special_tokens =
        embedded_config(m.family == ModelFamily::SD1 ? "sd1/special_tokens_map.json" : "sd2/special_tokens_map.json");

  const std::string from_config = m.configs.scheduler.value("prediction_type", std::string("epsilon"));
  m.prediction_type = opts.prediction ? parse_prediction_type(*opts.prediction) : parse_prediction_type(from_config);
  if (opts.prediction && m.prediction_type != from_config)
    m.notes.push_back(cat("prediction type ", m.prediction_type, " from --prediction (the scheduler config says ",
                          from_config, ")"));
  m.configs.scheduler["prediction_type"] = m.prediction_type;

  try {
    // UNet first: its shapes tell most clearly when a file is another architecture.
    check_component_tensors(*m.unet, unet_tensor_specs(m.configs.unet), "UNet");
    check_component_tensors(*m.vae, vae_tensor_specs(m.configs.vae), "VAE");
    check_component_tensors(*m.text_encoder, text_encoder_tensor_specs(m.configs.text_encoder), "text encoder");
  } catch (const Error& e) {
    if (m.layout != CheckpointLayout::SingleFile || !opts.config.empty()) throw;
    throw Error(cat(e.what(), "\n'", path.string(), "' does not match the built-in ", family_name(m.family),
                    " architecture (", m.family == ModelFamily::SD1 ? "SD 1.5" : "SD 2.1",
                    "). If it is a different architecture, pass --config with its diffusers folder or its ",
                    "config.json files"));
  }
  return m;
}

}  // namespace otter

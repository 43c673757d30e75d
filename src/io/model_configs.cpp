#include "io/model_configs.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/json_file.h"

namespace otter {

namespace embedded {
// Generated at build time from configs/**/*.json (configs/embed_configs.cmake).
struct ConfigFile {
  std::string_view path;
  std::string_view text;
};
extern const ConfigFile kConfigFiles[];
extern const std::size_t kConfigFileCount;
}  // namespace embedded

namespace fs = std::filesystem;
using nlohmann::json;

std::string_view family_name(ModelFamily family) { return family == ModelFamily::SD1 ? "SD 1.x" : "SD 2.x"; }

std::string_view config_kind_name(ConfigKind kind) {
  switch (kind) {
    case ConfigKind::TextEncoder: return "text encoder";
    case ConfigKind::Unet: return "UNet";
    case ConfigKind::Vae: return "VAE";
    case ConfigKind::Scheduler: return "scheduler";
  }
  return "?";
}

json& ModelConfigs::get(ConfigKind kind) {
  switch (kind) {
    case ConfigKind::TextEncoder: return text_encoder;
    case ConfigKind::Unet: return unet;
    case ConfigKind::Vae: return vae;
    case ConfigKind::Scheduler: return scheduler;
  }
  return scheduler;
}

const json& ModelConfigs::get(ConfigKind kind) const { return const_cast<ModelConfigs&>(*this).get(kind); }

json embedded_config(std::string_view relative_path) {
  for (std::size_t i = 0; i < embedded::kConfigFileCount; ++i) {
    const embedded::ConfigFile& f = embedded::kConfigFiles[i];
    if (f.path == relative_path) return json::parse(f.text);
  }
  throw Error(cat("built-in config 'configs/", relative_path, "' is not compiled into this otter build"));
}

namespace {

// Paths inside a diffusers pipeline folder.
fs::path config_path_in_folder(const fs::path& dir, ConfigKind kind) {
  switch (kind) {
    case ConfigKind::TextEncoder: return dir / "text_encoder" / "config.json";
    case ConfigKind::Unet: return dir / "unet" / "config.json";
    case ConfigKind::Vae: return dir / "vae" / "config.json";
    case ConfigKind::Scheduler: return dir / "scheduler" / "scheduler_config.json";
  }
  return {};
}

constexpr ConfigKind kAllKinds[] = {ConfigKind::TextEncoder, ConfigKind::Unet, ConfigKind::Vae,
                                    ConfigKind::Scheduler};

}  // namespace

ModelConfigs builtin_configs(ModelFamily family) {
  const std::string dir = family == ModelFamily::SD1 ? "sd1/" : "sd2/";
  ModelConfigs c;
  c.text_encoder = embedded_config(dir + "text_encoder.json");
  c.unet = embedded_config(dir + "unet.json");
  c.vae = embedded_config(dir + "vae.json");
  c.scheduler = embedded_config(dir + "scheduler.json");
  c.special_tokens = embedded_config(dir + "special_tokens_map.json");
  return c;
}


std::optional<ConfigKind> classify_config(const json& config) {
  if (!config.is_object()) return std::nullopt;
  const std::string cls = config.value("_class_name", std::string());
  if (cls == "UNet2DConditionModel") return ConfigKind::Unet;
  if (cls == "AutoencoderKL") return ConfigKind::Vae;
  if (cls.ends_with("Scheduler")) return ConfigKind::Scheduler;
  if (config.value("model_type", std::string()) == "clip_text_model") return ConfigKind::TextEncoder;
  if (config.contains("architectures") && config["architectures"].is_array())
    for (const json& a : config["architectures"])
      if (a.is_string() && a.get<std::string>().rfind("CLIPTextModel", 0) == 0) return ConfigKind::TextEncoder;
  return std::nullopt;
}

json with_defaults(ConfigKind kind, const json& config) {
  const char* file = nullptr;
  switch (kind) {
    case ConfigKind::TextEncoder: file = "defaults/text_encoder.json"; break;
    case ConfigKind::Unet: file = "defaults/unet.json"; break;
    case ConfigKind::Vae: file = "defaults/vae.json"; break;
    case ConfigKind::Scheduler: return config;
  }
  json complete = embedded_config(file);
  for (auto it = config.begin(); it != config.end(); ++it) complete[it.key()] = it.value();
  return complete;
}

ModelConfigs read_diffusers_configs(const fs::path& dir) {
  ModelConfigs c;
  for (ConfigKind kind : kAllKinds) {
    const fs::path p = config_path_in_folder(dir, kind);
    if (fs::is_regular_file(p)) c.get(kind) = read_json_file(p, cat(config_kind_name(kind), " config"));
  }
  const fs::path tok = dir / "tokenizer";
  if (fs::is_directory(tok)) {
    c.tokenizer_dir = tok;
    if (fs::is_regular_file(tok / "special_tokens_map.json"))
      c.special_tokens = read_json_file(tok / "special_tokens_map.json", "tokenizer special tokens");
  }
  return c;
}

std::vector<ConfigKind> apply_config_overrides(ModelConfigs& configs, const std::vector<fs::path>& paths,
                                               std::vector<std::string>& notes) {
  std::vector<ConfigKind> replaced;
  for (const fs::path& path : paths) {
    if (fs::is_directory(path)) {
      ModelConfigs from = read_diffusers_configs(path);
      bool any = false;
      for (ConfigKind kind : kAllKinds) {
        if (from.get(kind).is_null()) continue;
        configs.get(kind) = from.get(kind);
        replaced.push_back(kind);
        any = true;
      }
      if (from.tokenizer_dir) {
        configs.tokenizer_dir = from.tokenizer_dir;
        if (!from.special_tokens.is_null()) configs.special_tokens = from.special_tokens;
      }
      OTTER_CHECK(any, "--config '", path.string(), "' is a folder without text_encoder/config.json, unet/config.json, ",
                  "vae/config.json or scheduler/scheduler_config.json; pass a diffusers model folder or config.json files");
      notes.push_back(cat("configs from --config ", path.string()));
      continue;
    }
    OTTER_CHECK(fs::is_regular_file(path), "--config '", path.string(), "' does not exist; pass a diffusers model ",
                "folder or config.json files");
    json config = read_json_file(path, "--config file");
    const std::optional<ConfigKind> kind = classify_config(config);
    OTTER_CHECK(kind.has_value(), "--config '", path.string(), "' is not a text encoder, UNet, VAE or scheduler config ",
                "(expected \"_class_name\": \"UNet2DConditionModel\"/\"AutoencoderKL\"/\"...Scheduler\" or ",
                "\"model_type\": \"clip_text_model\")");
    configs.get(*kind) = std::move(config);
    replaced.push_back(*kind);
    notes.push_back(cat(config_kind_name(*kind), " config from --config ", path.string()));
  }
  return replaced;
}

ModelFamily family_from_text_encoder_config(const json& text_encoder_config) {
  const std::string act = text_encoder_config.value("hidden_act", std::string("quick_gelu"));
  return act == "quick_gelu" ? ModelFamily::SD1 : ModelFamily::SD2;
}

int64_t config_int(const json& config, const std::string& key, std::string_view component) {
  OTTER_CHECK(config.contains(key), component, " config has no '", key, "'");
  const json& v = config[key];
  OTTER_CHECK(v.is_number_integer(), component, " config key '", key, "' should be an integer, got ", v.dump());
  return v.get<int64_t>();
}

std::vector<int64_t> config_int_list(const json& config, const std::string& key, size_t count,
                                     std::string_view component) {
  OTTER_CHECK(config.contains(key), component, " config has no '", key, "'");
  const json& v = config[key];
  if (v.is_number_integer()) return std::vector<int64_t>(count, v.get<int64_t>());
  OTTER_CHECK(v.is_array() && v.size() == count, component, " config key '", key, "' should be an integer or a list of ",
              count, " integers (one per block), got ", v.dump());
  std::vector<int64_t> out;
  for (const json& e : v) {
    OTTER_CHECK(e.is_number_integer(), component, " config key '", key, "' should hold integers, got ", v.dump());
    out.push_back(e.get<int64_t>());
  }
  return out;
}

}  // namespace otter

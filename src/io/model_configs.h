#pragma once
// The JSON configurations a Stable Diffusion model is built from (diffusers' config.json of
// the text encoder, UNet and VAE, and the scheduler config), where they come from, and how
// missing keys are filled in.
//
// Sources, in order of precedence:
//   1. --config: a diffusers folder, or config.json files recognised by their own keys;
//   2. the model's diffusers folder;
//   3. for single-file checkpoints, the real SD 1.5 / SD 2.1 configurations that ship with otter
//      (configs/sd1, configs/sd2 in the source tree, compiled into the binary).
// Keys a config leaves out take the class defaults diffusers/transformers would use
// (configs/defaults), so every consumer sees a complete config.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace otter {

enum class ModelFamily { SD1, SD2 };

// "SD 1.x" / "SD 2.x", for messages.
std::string_view family_name(ModelFamily family);

enum class ConfigKind { TextEncoder, Unet, Vae, Scheduler };

// "text encoder", "UNet", "VAE", "scheduler".
std::string_view config_kind_name(ConfigKind kind);

struct ModelConfigs {
  nlohmann::json text_encoder;  // HF CLIPTextModel config
  nlohmann::json unet;          // diffusers UNet2DConditionModel config
  nlohmann::json vae;           // diffusers AutoencoderKL config
  nlohmann::json scheduler;     // diffusers scheduler config, as the file has it
  // tokenizer/special_tokens_map.json: SD 1.x pads prompts with "<|endoftext|>", SD 2.x with "!".
  nlohmann::json special_tokens;
  // A tokenizer/ folder (vocab.json, merges.txt) when the model or --config folder has one.
  std::optional<std::filesystem::path> tokenizer_dir;

  nlohmann::json& get(ConfigKind kind);
  const nlohmann::json& get(ConfigKind kind) const;
};

// The built-in configuration of real SD 1.5 or SD 2.1 (768-v), used for single-file checkpoints.
ModelConfigs builtin_configs(ModelFamily family);

// One file of configs/ as compiled into the binary, e.g. "sd1/unet.json"; throws if absent.
nlohmann::json embedded_config(std::string_view relative_path);

// JSON files are read with read_json_file (io/json_file.h), which accepts Python's -Infinity.

// What a config.json describes, judged by its own keys (`_class_name` for diffusers classes,
// `model_type`/`architectures` for transformers ones); nullopt if it is none of the four.
std::optional<ConfigKind> classify_config(const nlohmann::json& config);

// Returns `config` with every key it leaves out set to the class default (text encoder, UNet,
// VAE). Scheduler configs are returned unchanged: which defaults apply depends on the scheduler
// class the user picks later.
nlohmann::json with_defaults(ConfigKind kind, const nlohmann::json& config);

// Loads the configs of a diffusers folder: <dir>/{text_encoder,unet,vae}/config.json and
// scheduler/scheduler_config.json, plus tokenizer/ when present. Components whose config is
// missing are left null; the caller decides whether that is an error.
ModelConfigs read_diffusers_configs(const std::filesystem::path& dir);

// Applies --config: each path is a diffusers folder (all configs it has replace ours) or one
// config.json (replaces the component it describes). Appends a note per path and returns the
// kinds of config that were replaced.
std::vector<ConfigKind> apply_config_overrides(ModelConfigs& configs, const std::vector<std::filesystem::path>& paths,
                                               std::vector<std::string>& notes);

// SD 2.x uses OpenCLIP ViT-H, whose diffusers conversion has hidden_act "gelu"; SD 1.x uses
// OpenAI CLIP ViT-L with "quick_gelu".
ModelFamily family_from_text_encoder_config(const nlohmann::json& text_encoder_config);

// Reads an integer / a list of integers (an int is repeated `count` times) from a config, with
// errors naming the key and the component.
int64_t config_int(const nlohmann::json& config, const std::string& key, std::string_view component);
std::vector<int64_t> config_int_list(const nlohmann::json& config, const std::string& key, size_t count,
                                     std::string_view component);

}  // namespace otter

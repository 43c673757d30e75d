#pragma once
// Opening the Stable Diffusion checkpoints people have into one description the models load
// from, whatever the layout on disk:
//   * a diffusers folder (model_index.json, text_encoder/, unet/, vae/, scheduler/, tokenizer/),
//   * an original single-file .safetensors (model.diffusion_model.*, first_stage_model.*,
//     cond_stage_model.*), SD 1.x (OpenAI CLIP) or SD 2.x (OpenCLIP).
// Every component's tensors are offered under their diffusers names, zero-copy from the mapped
// files, and are checked against the configs before this returns: a missing, unexpected or
// wrong-shaped tensor fails here with the file, the tensor and the fix, not halfway through
// building a model. Pickle checkpoints (.ckpt, .bin, ...) are refused with an explanation.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/component_tensors.h"
#include "io/model_configs.h"
#include "models/weights.h"

namespace otter {

struct ModelOptions {
  // --config: a diffusers folder and/or config.json files (each recognised by its keys) that
  // replace the configs the model would otherwise use. Needed for single files that are not
  // real SD 1.5/2.1 architectures (e.g. the tiny test models).
  std::vector<std::filesystem::path> config;
  // --prediction: "epsilon" or "v_prediction" (see parse_prediction_type); overrides the
  // scheduler config and the SD 2.x single-file guess.
  std::optional<std::string> prediction;
  // Diffusers weight variant to prefer, e.g. "fp16" for diffusion_pytorch_model.fp16.safetensors.
  std::optional<std::string> variant;
};

enum class CheckpointLayout { DiffusersFolder, SingleFile };

struct ModelFiles {
  std::filesystem::path path;
  CheckpointLayout layout = CheckpointLayout::DiffusersFolder;
  ModelFamily family = ModelFamily::SD1;
  std::string prediction_type;  // "epsilon" or "v_prediction"; also written into configs.scheduler
  std::string name;             // for display: the folder or file name
  // Complete configs (missing keys filled with the class defaults); the tokenizer folder and
  // special tokens when the model or --config provide them, else the family's special tokens.
  ModelConfigs configs;
  // Tensors by diffusers names: "text_model.*", UNet "conv_in.weight", ..., VAE "encoder.*", ...
  std::shared_ptr<TensorSource> text_encoder, unet, vae;
  // What was detected or assumed, for the user ("detected SD 2.x (OpenCLIP text encoder)", ...).
  std::vector<std::string> notes;
};

ModelFiles open_model(const std::filesystem::path& path, const ModelOptions& options = {});

// "eps"/"epsilon" -> "epsilon", "v"/"v_prediction"/"v-prediction" -> "v_prediction"; throws otherwise.
std::string parse_prediction_type(const std::string& text);

// Tensors of a component source that are buffers, not parameters (ignored when checking for
// unexpected tensors and when counting parameters).
bool is_buffer_tensor(const std::string& name);

// Checks `source` against the tensors the config defines: every one present with the right
// shape, nothing unexpected (Weights::check_all_used). `component` names it in messages.
void check_component_tensors(const TensorSource& source, const std::vector<TensorSpec>& specs,
                             const std::string& component);

}  // namespace otter

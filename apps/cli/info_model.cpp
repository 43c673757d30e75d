// `otter info MODEL` for a diffusers folder or an original single-file checkpoint: what otter
// detected (family, prediction type, layout), where each component comes from, its dtypes and
// its exact parameter count (the tensors the model uses, so buffers like position_ids and the
// unused OpenCLIP blocks of SD 2.x files are not counted).
#include <algorithm>
#include <iomanip>
#include <map>
#include <ostream>
#include <string>

#include "core/dtype.h"
#include "info.h"
#include "io/component_tensors.h"
#include "io/model_files.h"
#include "io/safetensors.h"
#include "models/transformer_block_choice.h"
#include "models/unet_config.h"
#include "text/tokenizer_location.h"

namespace otter::cli {

namespace {

std::string join_ints(const nlohmann::json& v) {
  if (!v.is_array()) return v.dump();
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i].dump();
  return s + "]";
}

std::string text_encoder_summary(const nlohmann::json& c) {
  return cat("CLIPTextModel, ", c["num_hidden_layers"].dump(), " layers, hidden ", c["hidden_size"].dump(), ", ",
             c["num_attention_heads"].dump(), " heads, ", c["hidden_act"].get<std::string>());
}

std::string unet_summary(const nlohmann::json& c) {
  return cat("UNet2DConditionModel, channels ", join_ints(c["block_out_channels"]), ", ", c["layers_per_block"].dump(),
             " resnets per block, attention_head_dim ", join_ints(c["attention_head_dim"]), ", cross-attention ",
             c["cross_attention_dim"].dump(), ", ", c["use_linear_projection"].get<bool>() ? "linear" : "conv",
             " projections, ", c["norm_num_groups"].dump(), " groups");
}

std::string vae_summary(const nlohmann::json& c) {
  return cat("AutoencoderKL, channels ", join_ints(c["block_out_channels"]), ", ", c["latent_channels"].dump(),
             " latent channels, ", c["norm_num_groups"].dump(), " groups, scaling_factor ", c["scaling_factor"].dump());
}

void describe_component(std::ostream& out, const std::string& title, const std::string& summary,
                        const TensorSource& source, const std::vector<TensorSpec>& specs) {
  std::map<std::string, size_t> dtypes;
  int64_t params = 0;
  for (const TensorSpec& s : specs) {
    const Tensor t = source.get(s.name);
    params += t.numel();
    ++dtypes[std::string(dtype_name(t.dtype()))];
  }
  std::string dtype_list;
  for (const auto& [name, count] : dtypes) dtype_list += cat(dtype_list.empty() ? "" : ", ", name, " (", count, ")");
  out << title << ":\n"
      << "  architecture: " << summary << "\n"
      << "  weights:      " << source.origin() << "\n"
      << "  tensors:      " << specs.size() << ", dtypes " << dtype_list << "\n"
      << "  parameters:   " << params << "\n";
}

// The UNet's transformer blocks, as perturbed guidance names them (--guidance pag/seg/slg, layers=):
// index, otter's short name, diffusers' name, and the token grid at the model's native size.
void describe_transformer_layers(std::ostream& out, const nlohmann::json& unet_json) {
  const UNetConfig config = UNetConfig::from_json(unet_json);
  const int native = unet_json.value("sample_size", 64);
  const int n = static_cast<int>(config.num_blocks());
  out << "  transformer layers (--guidance …,layers=INDEX or NAME; tokens at " << native * 8 << "x" << native * 8 << "):\n";
  const std::vector<std::string> names = config.transformer_block_names();
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    // The level (how many downsamplers above it) from the block's place in the UNet.
    int level = n - 1;
    if (name.rfind("down_blocks.", 0) == 0) level = std::stoi(name.substr(12));
    if (name.rfind("up_blocks.", 0) == 0) level = n - 1 - std::stoi(name.substr(10));
    const int side = std::max(1, native >> level);
    out << "    " << std::setw(2) << i << "  " << std::left << std::setw(10) << short_transformer_name(name) << std::right
        << name << "  (" << side << "x" << side << ")\n";
  }
}

}  // namespace

bool is_single_file_checkpoint(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  for (const std::string& n : file.names())
    if (n.rfind("model.diffusion_model.", 0) == 0) return true;
  return false;
}

void describe_model(const std::filesystem::path& path, const ModelOptions& options, std::ostream& out,
                    const std::optional<std::filesystem::path>& tokenizer) {
  const ModelFiles m = open_model(path, options);
  const auto te = text_encoder_tensor_specs(m.configs.text_encoder);
  const auto unet = unet_tensor_specs(m.configs.unet);
  const auto vae = vae_tensor_specs(m.configs.vae);
  const nlohmann::json& pad = m.configs.special_tokens.value("pad_token", nlohmann::json());

  out << "model:        " << m.name << " (" << path.string() << ")\n"
      << "layout:       "
      << (m.layout == CheckpointLayout::DiffusersFolder ? "diffusers folder" : "original single file (LDM layout)") << "\n"
      << "family:       " << family_name(m.family) << "\n"
      << "prediction:   " << m.prediction_type << "\n"
      << "scheduler:    " << m.configs.scheduler.value("_class_name", std::string("?")) << "\n"
      << "tokenizer:    " << choose_tokenizer(m.configs.tokenizer_dir, tokenizer).describe()
      << ", pad token " << (pad.is_string() ? pad.dump() : std::string("?")) << "\n";
  describe_component(out, "text encoder", text_encoder_summary(m.configs.text_encoder), *m.text_encoder, te);
  describe_component(out, "unet", unet_summary(m.configs.unet), *m.unet, unet);
  describe_transformer_layers(out, m.configs.unet);
  describe_component(out, "vae", vae_summary(m.configs.vae), *m.vae, vae);
  out << "total parameters: " << count_parameters(te) + count_parameters(unet) + count_parameters(vae) << "\n";
  if (!m.notes.empty()) {
    out << "notes:\n";
    for (const std::string& n : m.notes) out << "  - " << n << "\n";
  }
}

}  // namespace otter::cli

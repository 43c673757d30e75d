#pragma once
// Tensor names of the original CompVis/Stability single-file checkpoints ("LDM layout") in
// terms of the diffusers names otter's models ask for. The maps are generated from the model
// configs (number of blocks, layers per block, which blocks have attention), so any SD 1.x/2.x
// variant with a matching config maps correctly; the renaming rules themselves are data tables
// in ldm_key_map.cpp.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace otter {

// Where one diffusers-named tensor lives in the original file.
struct LdmTensorRef {
  std::string key;  // full key in the file, e.g. "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
  // Rows [row_begin, row_end) of dim 0 when >= 0: OpenCLIP stores q, k and v stacked in one
  // in_proj_weight [3C, C] / in_proj_bias [3C]; each diffusers projection is a third of it.
  int64_t row_begin = -1;
  int64_t row_end = -1;
};

// diffusers name -> original tensor, for one component.
using LdmKeyMap = std::map<std::string, LdmTensorRef>;

// Key prefixes of the three components in an original checkpoint.
inline constexpr std::string_view kLdmUnetPrefix = "model.diffusion_model.";
inline constexpr std::string_view kLdmVaePrefix = "first_stage_model.";
inline constexpr std::string_view kLdmTextPrefix = "cond_stage_model.";
// SD 1.x: the HF CLIPTextModel itself, names unchanged below this prefix.
inline constexpr std::string_view kLdmClipPrefix = "cond_stage_model.transformer.";
// SD 2.x: OpenCLIP's text tower.
inline constexpr std::string_view kLdmOpenClipPrefix = "cond_stage_model.model.";

LdmKeyMap unet_ldm_key_map(const nlohmann::json& unet_config);
LdmKeyMap vae_ldm_key_map(const nlohmann::json& vae_config);
// SD 1.x text encoder: `file_prefix` + the transformers name. Most files use
// "cond_stage_model.transformer." (names "text_model.*" below it); files saved with old
// transformers versions lack the "text_model." level, which `file_prefix` can absorb.
LdmKeyMap clip_ldm_key_map(const nlohmann::json& text_encoder_config, const std::string& file_prefix,
                           bool has_text_model_level);
// SD 2.x text encoder from OpenCLIP names; only the first num_hidden_layers resblocks are mapped.
LdmKeyMap openclip_ldm_key_map(const nlohmann::json& text_encoder_config);

// Tensors of an OpenCLIP text tower that SD 2.x never uses: the resblocks past
// num_hidden_layers (SD 2.x takes the penultimate layer's output), the CLIP projection
// head (text_projection) and the contrastive temperature (logit_scale).
bool openclip_key_is_unused(const std::string& key, const nlohmann::json& text_encoder_config);

// Older diffusers VAEs name the mid-block attention query/key/value/proj_attn instead of
// to_q/to_k/to_v/to_out.0; maps the current names onto the legacy ones (prefix-free, within
// the VAE's own file). Only the four attention projections of each mid block are listed.
LdmKeyMap vae_legacy_attention_key_map(const nlohmann::json& vae_config);

}  // namespace otter

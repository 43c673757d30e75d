// The renaming rules between diffusers and the original (LDM) checkpoint layout, as tables.
//
// A component's map is built in two steps: the config gives the list of block prefix pairs
// (e.g. "down_blocks.1.resnets.0." <-> "input_blocks.4.0."), each tagged with the table of
// renames that applies inside that kind of block (e.g. a UNet resnet's "norm1." <-> "in_layers.0.");
// then every tensor the config defines (component_tensors.h) is translated through the longest
// matching prefix and its inner table. A tensor no prefix covers is a bug in these tables and
// throws, so the maps can never silently drop a tensor.
#include "io/ldm_key_map.h"

#include <vector>

#include "core/error.h"
#include "io/component_tensors.h"
#include "io/model_configs.h"

namespace otter {

using nlohmann::json;

namespace {

struct Rename {
  std::string_view diffusers;  // start of the name inside the block
  std::string_view ldm;
  int qkv = -1;  // 0/1/2: take that third of the rows (OpenCLIP's fused q/k/v projection)
};
using RenameTable = std::vector<Rename>;

// Inside a UNet ResBlock: in_layers = [GroupNorm, SiLU, Conv], emb_layers = [SiLU, Linear],
// out_layers = [GroupNorm, SiLU, Dropout, Conv]; the indices are the nn.Sequential positions.
const RenameTable kUnetResnet = {
    {"norm1.", "in_layers.0."},   {"conv1.", "in_layers.2."},  {"time_emb_proj.", "emb_layers.1."},
    {"norm2.", "out_layers.0."},  {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."},
};
// UNet Downsample: LDM calls the strided conv "op".
const RenameTable kUnetDownsample = {{"conv.", "op."}};
// VAE ResnetBlock: identical except the 1x1 shortcut.
const RenameTable kVaeResnet = {{"conv_shortcut.", "nin_shortcut."}};
// VAE AttnBlock: 1x1 convs in LDM (weights [C, C, 1, 1]), Linear layers in diffusers ([C, C]).
const RenameTable kVaeAttention = {
    {"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."},
};
// OpenCLIP ResidualAttentionBlock vs HF CLIPEncoderLayer.
const RenameTable kOpenClipLayer = {
    {"self_attn.q_proj.weight", "attn.in_proj_weight", 0}, {"self_attn.q_proj.bias", "attn.in_proj_bias", 0},
    {"self_attn.k_proj.weight", "attn.in_proj_weight", 1}, {"self_attn.k_proj.bias", "attn.in_proj_bias", 1},
    {"self_attn.v_proj.weight", "attn.in_proj_weight", 2}, {"self_attn.v_proj.bias", "attn.in_proj_bias", 2},
    {"self_attn.out_proj.", "attn.out_proj."},             {"layer_norm1.", "ln_1."},
    {"layer_norm2.", "ln_2."},                             {"mlp.fc1.", "mlp.c_fc."},
    {"mlp.fc2.", "mlp.c_proj."},
};
// Older diffusers VAE attention names.
const RenameTable kVaeLegacyAttention = {
    {"to_q.", "query."}, {"to_k.", "key."}, {"to_v.", "value."}, {"to_out.0.", "proj_attn."},
};
const RenameTable kSame = {};

struct BlockPair {
  std::string diffusers;  // prefix, or a whole tensor name
  std::string ldm;
  const RenameTable* inner;
};

// Translates every spec name through the longest matching block prefix.
LdmKeyMap translate(const std::vector<TensorSpec>& specs, const std::vector<BlockPair>& pairs,
                    std::string_view file_prefix, int64_t qkv_rows, std::string_view component) {
  LdmKeyMap map;
  for (const TensorSpec& spec : specs) {
    const BlockPair* best = nullptr;
    for (const BlockPair& p : pairs)
      if (spec.name.rfind(p.diffusers, 0) == 0 && (!best || p.diffusers.size() > best->diffusers.size())) best = &p;
    OTTER_CHECK(best, "internal: no original-checkpoint name for ", component, " tensor '", spec.name,
                "' (ldm_key_map.cpp lacks a block rule)");
    const std::string inner = spec.name.substr(best->diffusers.size());
    LdmTensorRef ref;
    ref.key = std::string(file_prefix) + best->ldm + inner;
    for (const Rename& r : *best->inner) {
      if (inner.rfind(r.diffusers, 0) != 0) continue;
      ref.key = std::string(file_prefix) + best->ldm + std::string(r.ldm) + inner.substr(r.diffusers.size());
      if (r.qkv >= 0) {
        ref.row_begin = r.qkv * qkv_rows;
        ref.row_end = (r.qkv + 1) * qkv_rows;
      }
      break;
    }
    map.emplace(spec.name, std::move(ref));
  }
  return map;
}

std::vector<int64_t> layers_per_block(const json& config, size_t blocks, std::string_view component) {
  return config_int_list(config, "layers_per_block", blocks, component);
}

}  // namespace

LdmKeyMap unet_ldm_key_map(const json& config_in) {
  const json config = with_defaults(ConfigKind::Unet, config_in);
  const std::vector<TensorSpec> specs = unet_tensor_specs(config);
  const auto& down = config["down_block_types"];
  const auto& up = config["up_block_types"];
  const size_t n = down.size();
  const std::vector<int64_t> layers = layers_per_block(config, n, "UNet");

  std::vector<BlockPair> pairs = {
      {"conv_in.", "input_blocks.0.0.", &kSame},
      {"time_embedding.linear_1.", "time_embed.0.", &kSame},
      {"time_embedding.linear_2.", "time_embed.2.", &kSame},
      {"mid_block.resnets.0.", "middle_block.0.", &kUnetResnet},
      {"mid_block.attentions.0.", "middle_block.1.", &kSame},
      {"mid_block.resnets.1.", "middle_block.2.", &kUnetResnet},
      {"conv_norm_out.", "out.0.", &kSame},
      {"conv_out.", "out.2.", &kSame},
  };
  // LDM numbers input_blocks consecutively: conv_in, then per level its resnet(+attention)
  // pairs, then its downsampler.
  int64_t k = 1;
  for (size_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < layers[i]; ++j, ++k) {
      pairs.push_back({cat("down_blocks.", i, ".resnets.", j, "."), cat("input_blocks.", k, ".0."), &kUnetResnet});
      pairs.push_back({cat("down_blocks.", i, ".attentions.", j, "."), cat("input_blocks.", k, ".1."), &kSame});
    }
    if (i + 1 < n) pairs.push_back({cat("down_blocks.", i, ".downsamplers.0."), cat("input_blocks.", k++, ".0."), &kUnetDownsample});
  }
  // output_blocks: one per up-block resnet; the upsampler joins the level's last one, after
  // the attention when the block has one.
  k = 0;
  for (size_t i = 0; i < n; ++i) {
    const bool attn = up[i] == "CrossAttnUpBlock2D";
    const int64_t num = layers[n - 1 - i] + 1;
    for (int64_t j = 0; j < num; ++j, ++k) {
      pairs.push_back({cat("up_blocks.", i, ".resnets.", j, "."), cat("output_blocks.", k, ".0."), &kUnetResnet});
      pairs.push_back({cat("up_blocks.", i, ".attentions.", j, "."), cat("output_blocks.", k, ".1."), &kSame});
      if (j == num - 1 && i + 1 < n)
        pairs.push_back({cat("up_blocks.", i, ".upsamplers.0."), cat("output_blocks.", k, ".", attn ? 2 : 1, "."), &kSame});
    }
  }
  return translate(specs, pairs, kLdmUnetPrefix, 0, "UNet");
}

LdmKeyMap vae_ldm_key_map(const json& config_in) {
  const json config = with_defaults(ConfigKind::Vae, config_in);
  const std::vector<TensorSpec> specs = vae_tensor_specs(config);
  const size_t n = config["down_block_types"].size();
  const int64_t layers = config_int(config, "layers_per_block", "VAE");

  std::vector<BlockPair> pairs = {
      {"quant_conv.", "quant_conv.", &kSame},
      {"post_quant_conv.", "post_quant_conv.", &kSame},
  };
  for (const std::string part : {"encoder.", "decoder."}) {
    pairs.push_back({part + "conv_in.", part + "conv_in.", &kSame});
    pairs.push_back({part + "mid_block.resnets.0.", part + "mid.block_1.", &kVaeResnet});
    pairs.push_back({part + "mid_block.attentions.0.", part + "mid.attn_1.", &kVaeAttention});
    pairs.push_back({part + "mid_block.resnets.1.", part + "mid.block_2.", &kVaeResnet});
    pairs.push_back({part + "conv_norm_out.", part + "norm_out.", &kSame});
    pairs.push_back({part + "conv_out.", part + "conv_out.", &kSame});
  }
  for (size_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < layers; ++j)
      pairs.push_back({cat("encoder.down_blocks.", i, ".resnets.", j, "."), cat("encoder.down.", i, ".block.", j, "."), &kVaeResnet});
    pairs.push_back({cat("encoder.down_blocks.", i, ".downsamplers.0."), cat("encoder.down.", i, ".downsample."), &kSame});
    // The decoder's levels are numbered from the deepest in LDM, from the shallowest in diffusers.
    const size_t level = n - 1 - i;
    for (int64_t j = 0; j <= layers; ++j)
      pairs.push_back({cat("decoder.up_blocks.", i, ".resnets.", j, "."), cat("decoder.up.", level, ".block.", j, "."), &kVaeResnet});
    pairs.push_back({cat("decoder.up_blocks.", i, ".upsamplers.0."), cat("decoder.up.", level, ".upsample."), &kSame});
  }
  return translate(specs, pairs, kLdmVaePrefix, 0, "VAE");
}

LdmKeyMap clip_ldm_key_map(const json& config, const std::string& file_prefix, bool has_text_model_level) {
  const std::vector<TensorSpec> specs = text_encoder_tensor_specs(config);
  const std::vector<BlockPair> pairs = {{"text_model.", has_text_model_level ? "text_model." : "", &kSame}};
  return translate(specs, pairs, file_prefix, 0, "text encoder");
}

LdmKeyMap openclip_ldm_key_map(const json& config_in) {
  const json config = with_defaults(ConfigKind::TextEncoder, config_in);
  const std::vector<TensorSpec> specs = text_encoder_tensor_specs(config);
  const int64_t layers = config_int(config, "num_hidden_layers", "text encoder");
  std::vector<BlockPair> pairs = {
      {"text_model.embeddings.token_embedding.", "token_embedding.", &kSame},
      {"text_model.embeddings.position_embedding.weight", "positional_embedding", &kSame},
      {"text_model.final_layer_norm.", "ln_final.", &kSame},
  };
  for (int64_t l = 0; l < layers; ++l)
    pairs.push_back({cat("text_model.encoder.layers.", l, "."), cat("transformer.resblocks.", l, "."), &kOpenClipLayer});
  return translate(specs, pairs, kLdmOpenClipPrefix, config_int(config, "hidden_size", "text encoder"), "text encoder");
}

bool openclip_key_is_unused(const std::string& key, const json& config_in) {
  const std::string p(kLdmOpenClipPrefix);
  if (key == p + "text_projection" || key == p + "logit_scale") return true;
  const std::string blocks = p + "transformer.resblocks.";
  if (key.rfind(blocks, 0) != 0) return false;
  const json config = with_defaults(ConfigKind::TextEncoder, config_in);
  const size_t end = key.find('.', blocks.size());
  if (end == std::string::npos || end == blocks.size()) return false;
  const std::string index = key.substr(blocks.size(), end - blocks.size());
  if (index.find_first_not_of("0123456789") != std::string::npos || index.size() > 6) return false;
  return std::stoll(index) >= config_int(config, "num_hidden_layers", "text encoder");
}

LdmKeyMap vae_legacy_attention_key_map(const json& config_in) {
  const json config = with_defaults(ConfigKind::Vae, config_in);
  std::vector<TensorSpec> attention;
  for (TensorSpec& s : vae_tensor_specs(config))
    if (s.name.find(".mid_block.attentions.0.to_") != std::string::npos) attention.push_back(std::move(s));
  const std::vector<BlockPair> pairs = {
      {"encoder.mid_block.attentions.0.", "encoder.mid_block.attentions.0.", &kVaeLegacyAttention},
      {"decoder.mid_block.attentions.0.", "decoder.mid_block.attentions.0.", &kVaeLegacyAttention},
  };
  return translate(attention, pairs, "", 0, "VAE");
}

}  // namespace otter

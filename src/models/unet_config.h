#pragma once
// The architecture of a UNet2DConditionModel (SD 1.x / 2.x), read from a diffusers
// unet/config.json. Everything the UNet code needs is resolved here into per-block lists, so
// the model never has to know about diffusers' config quirks (ints that stand for lists,
// `attention_head_dim` that means heads, defaults of absent keys).
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace otter {

enum class UNetDownBlockType { CrossAttnDown, Down };
enum class UNetUpBlockType { CrossAttnUp, Up };

struct UNetConfig {
  int in_channels = 4;
  int out_channels = 4;
  std::vector<int> block_out_channels;  // one per down block
  std::vector<UNetDownBlockType> down_blocks;
  std::vector<UNetUpBlockType> up_blocks;  // same count as down_blocks, deepest first
  bool has_mid_block = true;               // UNetMidBlock2DCrossAttn (mid_block_type null: none)

  // Per down block i (index into down_blocks); up block i uses index (n - 1 - i), the mid
  // block the last entry — exactly how diffusers reverses its lists.
  std::vector<int> layers_per_block;          // resnets per down block (up blocks have one more)
  std::vector<int> attention_heads;           // heads of each Transformer2D
  std::vector<int> transformer_layers;        // BasicTransformerBlocks per Transformer2D
  std::vector<int> up_transformer_layers;     // per up block (reverse_transformer_layers_per_block)
  std::vector<int> cross_attention_dim;       // width of the text states

  int norm_num_groups = 32;
  float norm_eps = 1e-5f;          // resnets and conv_norm_out; Transformer2D's GroupNorm is 1e-6
  bool use_linear_projection = false;  // proj_in/out: Linear (SD2) instead of 1x1 Conv2d (SD1)
  // Diffusers computes attention scores in f32 when set (for f16 inference). otter's attention
  // always accumulates scores and softmax in f32, so this changes nothing; kept for reporting.
  bool upcast_attention = false;
  bool flip_sin_to_cos = true;
  float freq_shift = 0.0f;
  bool center_input_sample = false;  // sample = 2 * sample - 1 before conv_in
  int downsample_padding = 1;
  float mid_block_scale_factor = 1.0f;   // mid-block resnets divide their output by this
  float resnet_out_scale_factor = 1.0f;  // down/up-block resnets divide their output by this
  int conv_in_kernel = 3;
  int conv_out_kernel = 3;
  int time_embed_dim = 0;  // 4 * block_out_channels[0] unless time_embedding_dim is set

  // Parses a diffusers UNet2DConditionModel config. `origin` (a file name) appears in errors.
  // Throws otter::Error for missing or malformed keys and for features otter does not
  // implement (class/addition embeddings, dual/only cross-attention, other block types, ...).
  static UNetConfig from_json(const nlohmann::json& config, const std::string& origin = "unet config");
  static UNetConfig from_file(const std::filesystem::path& config_json);

  size_t num_blocks() const { return block_out_channels.size(); }
  // How much the spatial size shrinks at the bottom of the UNet (2 per downsampler); latent
  // height and width must be multiples of it.
  int spatial_divisor() const { return 1 << (num_blocks() - 1); }
  int mid_heads() const { return attention_heads.back(); }
  int up_heads(size_t up_index) const { return attention_heads[num_blocks() - 1 - up_index]; }
  // diffusers' module names of the BasicTransformerBlocks in forward order (down, mid, up), e.g.
  // "down_blocks.1.attentions.0.transformer_blocks.0": the layers perturbed guidance chooses from.
  std::vector<std::string> transformer_block_names() const;
};

}  // namespace otter

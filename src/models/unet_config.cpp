#include "models/unet_config.h"

#include <fstream>

#include "core/error.h"
#include "io/json_file.h"

namespace otter {
namespace {

using nlohmann::json;


// diffusers accepts an int (same for every block) or a list with one entry per down block.
std::vector<int> int_or_list(const json& j, const char* key, int fallback, size_t blocks, const std::string& origin) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::vector<int>(blocks, fallback);
  if (it->is_number_integer()) return std::vector<int>(blocks, it->get<int>());
  OTTER_CHECK(it->is_array(), origin, ": '", key, "' must be an integer or a list of integers, got ", it->dump());
  std::vector<int> out;
  for (const json& v : *it) {
    OTTER_CHECK(v.is_number_integer(), origin, ": '", key, "' must hold integers (nested per-layer lists are not "
                "supported), got ", it->dump());
    out.push_back(v.get<int>());
  }
  OTTER_CHECK(out.size() == blocks, origin, ": '", key, "' has ", out.size(), " entries, expected one per down block (",
              blocks, ")");
  return out;
}

// Keys that select architecture variants otter does not implement: each must be absent, null
// or equal to the SD 1.x/2.x value, otherwise loading would silently compute something else.
void reject_unsupported(const json& j, const std::string& origin) {
  const auto must_be_null = {"class_embed_type",     "addition_embed_type", "encoder_hid_dim_type",
                             "encoder_hid_dim",      "time_cond_proj_dim",  "timestep_post_act",
                             "time_embedding_act_fn", "cross_attention_norm", "num_class_embeds",
                             "reverse_transformer_layers_per_block"};
  for (const char* key : must_be_null) {
    const auto it = j.find(key);
    OTTER_CHECK(it == j.end() || it->is_null(), origin, ": '", key, "' = ", it->dump(),
                " is not supported (otter implements the SD 1.x/2.x UNet, where it is null)");
  }
  const auto expect_string = [&](const char* key, const char* wanted) {
    const std::string v = config_value_or<std::string>(j, key, wanted, origin);
    OTTER_CHECK(v == wanted, origin, ": '", key, "' = \"", v, "\" is not supported (only \"", wanted, "\")");
  };
  expect_string("act_fn", "silu");
  expect_string("time_embedding_type", "positional");
  expect_string("resnet_time_scale_shift", "default");
  expect_string("attention_type", "default");
  // A bool, or (only_cross_attention) a list of bools per block: every one must be false.
  const auto expect_false = [&](const char* key) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    bool any_true = !it->is_boolean() && !it->is_array();
    if (it->is_boolean()) any_true = it->get<bool>();
    if (it->is_array())
      for (const json& v : *it) any_true = any_true || !v.is_boolean() || v.get<bool>();
    OTTER_CHECK(!any_true, origin, ": '", key, "' = ", it->dump(), " is not supported (SD 1.x/2.x use false)");
  };
  expect_false("dual_cross_attention");
  expect_false("only_cross_attention");
  expect_false("mid_block_only_cross_attention");
  expect_false("resnet_skip_time_act");
  expect_false("class_embeddings_concat");
}

std::vector<std::string> string_list(const json& j, const char* key, const std::string& origin) {
  const auto it = j.find(key);
  OTTER_CHECK(it != j.end() && it->is_array(), origin, ": '", key, "' (a list of block types) is missing");
  std::vector<std::string> out;
  for (const json& v : *it) {
    OTTER_CHECK(v.is_string(), origin, ": '", key, "' must hold strings, got ", it->dump());
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

UNetConfig UNetConfig::from_json(const json& j, const std::string& origin) {
  OTTER_CHECK(j.is_object(), origin, ": expected a JSON object");
  const std::string cls = config_value_or<std::string>(j, "_class_name", "UNet2DConditionModel", origin);
  OTTER_CHECK(cls == "UNet2DConditionModel", origin, ": _class_name is '", cls,
              "', expected 'UNet2DConditionModel' (is this the unet/config.json?)");
  reject_unsupported(j, origin);

  UNetConfig c;
  c.in_channels = config_value_or(j, "in_channels", 4, origin);
  c.out_channels = config_value_or(j, "out_channels", 4, origin);
  c.block_out_channels = config_value_or(j, "block_out_channels", std::vector<int>{320, 640, 1280, 1280}, origin);
  const size_t n = c.block_out_channels.size();
  OTTER_CHECK(n >= 1, origin, ": block_out_channels is empty");
  constexpr int kMaxChannels = 1 << 20;  // far above any model; keeps 4 x channels (the default time embedding) in an int
  for (size_t i = 0; i < n; ++i)
    OTTER_CHECK(c.block_out_channels[i] >= 1 && c.block_out_channels[i] <= kMaxChannels, origin, ": block_out_channels[",
                i, "] = ", c.block_out_channels[i], " is not in 1..", kMaxChannels);
  OTTER_CHECK(c.in_channels >= 1 && c.out_channels >= 1, origin, ": in_channels and out_channels must be at least 1, got ",
              c.in_channels, " and ", c.out_channels);

  const std::vector<std::string> down = string_list(j, "down_block_types", origin);
  const std::vector<std::string> up = string_list(j, "up_block_types", origin);
  OTTER_CHECK(down.size() == n && up.size() == n, origin, ": ", down.size(), " down_block_types and ", up.size(),
              " up_block_types for ", n, " block_out_channels; they must all have the same length");
  for (const std::string& t : down) {
    OTTER_CHECK(t == "CrossAttnDownBlock2D" || t == "DownBlock2D", origin, ": down block type '", t,
                "' is not supported (CrossAttnDownBlock2D, DownBlock2D)");
    c.down_blocks.push_back(t == "DownBlock2D" ? UNetDownBlockType::Down : UNetDownBlockType::CrossAttnDown);
  }
  for (const std::string& t : up) {
    OTTER_CHECK(t == "CrossAttnUpBlock2D" || t == "UpBlock2D", origin, ": up block type '", t,
                "' is not supported (CrossAttnUpBlock2D, UpBlock2D)");
    c.up_blocks.push_back(t == "UpBlock2D" ? UNetUpBlockType::Up : UNetUpBlockType::CrossAttnUp);
  }
  const auto mid = j.find("mid_block_type");
  if (mid == j.end()) {
    c.has_mid_block = true;  // diffusers' default
  } else if (mid->is_null()) {
    c.has_mid_block = false;
  } else {
    OTTER_CHECK(mid->is_string() && mid->get<std::string>() == "UNetMidBlock2DCrossAttn", origin,
                ": mid_block_type ", mid->dump(), " is not supported (UNetMidBlock2DCrossAttn or null)");
  }

  c.layers_per_block = int_or_list(j, "layers_per_block", 2, n, origin);
  c.transformer_layers = int_or_list(j, "transformer_layers_per_block", 1, n, origin);
  c.up_transformer_layers.assign(c.transformer_layers.rbegin(), c.transformer_layers.rend());
  c.cross_attention_dim = int_or_list(j, "cross_attention_dim", 1280, n, origin);

  // diffusers' historical naming: for these models `attention_head_dim` holds the number of
  // heads (unet_2d_condition.py: `num_attention_heads = num_attention_heads or
  // attention_head_dim`); each Transformer2D then uses head_dim = channels / heads.
  // Current diffusers refuses an explicit num_attention_heads; otter honours it, since it can
  // only mean heads.
  const auto heads_key = j.find("num_attention_heads");
  const bool explicit_heads = heads_key != j.end() && !heads_key->is_null();
  c.attention_heads = int_or_list(j, explicit_heads ? "num_attention_heads" : "attention_head_dim", 8, n, origin);

  c.norm_num_groups = config_value_or(j, "norm_num_groups", 32, origin);
  c.norm_eps = config_value_or(j, "norm_eps", 1e-5f, origin);
  c.use_linear_projection = config_value_or(j, "use_linear_projection", false, origin);
  c.upcast_attention = config_value_or(j, "upcast_attention", false, origin);
  c.flip_sin_to_cos = config_value_or(j, "flip_sin_to_cos", true, origin);
  c.freq_shift = config_value_or(j, "freq_shift", 0.0f, origin);
  c.center_input_sample = config_value_or(j, "center_input_sample", false, origin);
  c.downsample_padding = config_value_or(j, "downsample_padding", 1, origin);
  c.mid_block_scale_factor = config_value_or(j, "mid_block_scale_factor", 1.0f, origin);
  c.resnet_out_scale_factor = config_value_or(j, "resnet_out_scale_factor", 1.0f, origin);
  c.conv_in_kernel = config_value_or(j, "conv_in_kernel", 3, origin);
  c.conv_out_kernel = config_value_or(j, "conv_out_kernel", 3, origin);
  c.time_embed_dim = config_value_or(j, "time_embedding_dim", 4 * c.block_out_channels[0], origin);

  // Consistency checks that would otherwise surface as confusing shape errors deep inside.
  OTTER_CHECK(c.norm_num_groups >= 1, origin, ": norm_num_groups must be at least 1, got ", c.norm_num_groups);
  for (size_t i = 0; i < n; ++i) {
    const int ch = c.block_out_channels[i];
    OTTER_CHECK(ch % c.norm_num_groups == 0, origin, ": block_out_channels[", i, "] = ", ch,
                " is not a positive multiple of norm_num_groups = ", c.norm_num_groups);
    OTTER_CHECK(c.attention_heads[i] > 0 && ch % c.attention_heads[i] == 0, origin, ": block ", i, " has ", ch,
                " channels, which do not split into ", c.attention_heads[i], " attention heads");
    OTTER_CHECK(c.layers_per_block[i] >= 1 && c.transformer_layers[i] >= 1, origin,
                ": layers_per_block and transformer_layers_per_block must be at least 1");
  }
  OTTER_CHECK(c.conv_in_kernel % 2 == 1 && c.conv_out_kernel % 2 == 1, origin,
              ": conv_in_kernel and conv_out_kernel must be odd");
  OTTER_CHECK(c.downsample_padding >= 0, origin, ": downsample_padding must be >= 0");
  OTTER_CHECK(c.block_out_channels[0] % 2 == 0, origin, ": block_out_channels[0] must be even (sinusoidal embedding)");
  return c;
}

UNetConfig UNetConfig::from_file(const std::filesystem::path& path) {
  return from_json(read_json_file(path, "unet config"), path.string());
}

std::vector<std::string> UNetConfig::transformer_block_names() const {
  std::vector<std::string> names;
  const auto add = [&](const std::string& transformer, int layers) {
    for (int k = 0; k < layers; ++k) names.push_back(transformer + ".transformer_blocks." + std::to_string(k));
  };
  const size_t n = num_blocks();
  for (size_t i = 0; i < n; ++i)
    if (down_blocks[i] == UNetDownBlockType::CrossAttnDown)
      for (int j = 0; j < layers_per_block[i]; ++j)
        add("down_blocks." + std::to_string(i) + ".attentions." + std::to_string(j), transformer_layers[i]);
  if (has_mid_block) add("mid_block.attentions.0", transformer_layers[n - 1]);
  for (size_t i = 0; i < n; ++i)
    if (up_blocks[i] == UNetUpBlockType::CrossAttnUp)
      for (int j = 0; j < layers_per_block[n - 1 - i] + 1; ++j)
        add("up_blocks." + std::to_string(i) + ".attentions." + std::to_string(j), up_transformer_layers[i]);
  return names;
}

}  // namespace otter

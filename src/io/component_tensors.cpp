#include "io/component_tensors.h"

#include <algorithm>

#include "core/error.h"
#include "io/model_configs.h"

namespace otter {

using nlohmann::json;

namespace {

// Appends the tensors of the common layer kinds under `prefix` ("down_blocks.0.resnets.1.").
class SpecList {
 public:
  void add(const std::string& name, Shape shape) { specs_.push_back({name, shape}); }
  void linear(const std::string& p, int64_t in, int64_t out, bool bias = true) {
    add(p + "weight", {out, in});
    if (bias) add(p + "bias", {out});
  }
  void conv(const std::string& p, int64_t in, int64_t out, int64_t k) {
    add(p + "weight", {out, in, k, k});
    add(p + "bias", {out});
  }
  void norm(const std::string& p, int64_t channels) {  // GroupNorm and LayerNorm alike
    add(p + "weight", {channels});
    add(p + "bias", {channels});
  }
  // diffusers ResnetBlock2D; `temb` 0 for the VAE's resnets, which have no time embedding.
  void resnet(const std::string& p, int64_t in, int64_t out, int64_t temb) {
    norm(p + "norm1.", in);
    conv(p + "conv1.", in, out, 3);
    if (temb > 0) linear(p + "time_emb_proj.", temb, out);
    norm(p + "norm2.", out);
    conv(p + "conv2.", out, out, 3);
    if (in != out) conv(p + "conv_shortcut.", in, out, 1);
  }
  // diffusers Transformer2DModel with BasicTransformerBlocks (self-attn, cross-attn, GEGLU).
  void transformer2d(const std::string& p, int64_t channels, int64_t layers, int64_t context, bool linear_proj) {
    norm(p + "norm.", channels);
    if (linear_proj) linear(p + "proj_in.", channels, channels);
    else conv(p + "proj_in.", channels, channels, 1);
    for (int64_t t = 0; t < layers; ++t) {
      const std::string b = cat(p, "transformer_blocks.", t, ".");
      norm(b + "norm1.", channels);
      for (const char* qkv : {"to_q.", "to_k.", "to_v."}) linear(b + "attn1." + qkv, channels, channels, false);
      linear(b + "attn1.to_out.0.", channels, channels);
      norm(b + "norm2.", channels);
      linear(b + "attn2.to_q.", channels, channels, false);
      linear(b + "attn2.to_k.", context, channels, false);
      linear(b + "attn2.to_v.", context, channels, false);
      linear(b + "attn2.to_out.0.", channels, channels);
      norm(b + "norm3.", channels);
      linear(b + "ff.net.0.proj.", channels, 2 * 4 * channels);
      linear(b + "ff.net.2.", 4 * channels, channels);
    }
    if (linear_proj) linear(p + "proj_out.", channels, channels);
    else conv(p + "proj_out.", channels, channels, 1);
  }
  // The VAE's single-head mid-block attention (current diffusers names, Linear [C, C]).
  void vae_attention(const std::string& p, int64_t channels) {
    norm(p + "group_norm.", channels);
    for (const char* n : {"to_q.", "to_k.", "to_v.", "to_out.0."}) linear(p + n, channels, channels);
  }
  std::vector<TensorSpec> take() { return std::move(specs_); }

 private:
  std::vector<TensorSpec> specs_;
};

// Refuses config values otter's models do not implement, naming the key.
void require_value(const json& config, const std::string& key, const json& supported, std::string_view component,
                   std::string_view hint = "") {
  if (!config.contains(key)) return;  // absent = the class default, which is the supported value
  OTTER_CHECK(config[key] == supported, component, " config '", key, "' = ", config[key].dump(),
              " is not supported (otter implements SD 1.x/2.x, where it is ", supported.dump(), ")", hint);
}

std::vector<std::string> string_list(const json& config, const std::string& key, std::string_view component) {
  OTTER_CHECK(config.contains(key) && config[key].is_array(), component, " config has no list '", key, "'");
  std::vector<std::string> out;
  for (const json& v : config[key]) {
    OTTER_CHECK(v.is_string(), component, " config '", key, "' should list block names, got ", config[key].dump());
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

std::vector<TensorSpec> unet_tensor_specs(const json& config_in) {
  const json config = with_defaults(ConfigKind::Unet, config_in);
  const std::string_view C = "UNet";
  const char* sdxl = " - is this an SDXL or other non-SD1/2 model?";
  for (const char* key : {"class_embed_type", "addition_embed_type", "encoder_hid_dim", "encoder_hid_dim_type",
                          "num_class_embeds", "time_cond_proj_dim", "time_embedding_act_fn", "timestep_post_act",
                          "cross_attention_norm"})
    require_value(config, key, nullptr, C, sdxl);
  require_value(config, "time_embedding_type", "positional", C);
  const bool has_mid = !config["mid_block_type"].is_null();
  if (has_mid) require_value(config, "mid_block_type", "UNetMidBlock2DCrossAttn", C);
  require_value(config, "only_cross_attention", false, C);
  require_value(config, "dual_cross_attention", false, C);
  require_value(config, "class_embeddings_concat", false, C);
  require_value(config, "resnet_time_scale_shift", "default", C);
  require_value(config, "attention_type", "default", C);
  require_value(config, "act_fn", "silu", C);

  const std::vector<std::string> down = string_list(config, "down_block_types", C);
  const std::vector<std::string> up = string_list(config, "up_block_types", C);
  const size_t n = down.size();
  OTTER_CHECK(n > 0 && up.size() == n, "UNet config has ", n, " down blocks but ", up.size(), " up blocks");
  const std::vector<int64_t> ch = config_int_list(config, "block_out_channels", n, C);
  OTTER_CHECK(config["block_out_channels"].is_array(), "UNet config 'block_out_channels' should be a list");
  const std::vector<int64_t> layers = config_int_list(config, "layers_per_block", n, C);
  const std::vector<int64_t> tlayers = config_int_list(config, "transformer_layers_per_block", n, C);
  // Up block i mirrors down block n-1-i, unless the config lists its depths separately.
  std::vector<int64_t> up_tlayers(tlayers.rbegin(), tlayers.rend());
  if (!config["reverse_transformer_layers_per_block"].is_null())
    up_tlayers = config_int_list(config, "reverse_transformer_layers_per_block", n, C);
  const std::vector<int64_t> context = config_int_list(config, "cross_attention_dim", n, C);
  const bool linear_proj = config.value("use_linear_projection", false);
  const int64_t in_ch = config_int(config, "in_channels", C), out_ch = config_int(config, "out_channels", C);
  const int64_t k_in = config_int(config, "conv_in_kernel", C), k_out = config_int(config, "conv_out_kernel", C);
  const int64_t temb = config["time_embedding_dim"].is_null() ? 4 * ch[0] : config_int(config, "time_embedding_dim", C);

  SpecList s;
  s.conv("conv_in.", in_ch, ch[0], k_in);
  s.linear("time_embedding.linear_1.", ch[0], temb);
  s.linear("time_embedding.linear_2.", temb, temb);

  for (size_t i = 0; i < n; ++i) {
    OTTER_CHECK(down[i] == "CrossAttnDownBlock2D" || down[i] == "DownBlock2D", "UNet down block type '", down[i],
                "' is not supported (SD 1.x/2.x use CrossAttnDownBlock2D and DownBlock2D)");
    const bool attn = down[i] == "CrossAttnDownBlock2D";
    const int64_t in = i == 0 ? ch[0] : ch[i - 1];
    const std::string p = cat("down_blocks.", i, ".");
    for (int64_t j = 0; j < layers[i]; ++j) {
      s.resnet(cat(p, "resnets.", j, "."), j == 0 ? in : ch[i], ch[i], temb);
      if (attn) s.transformer2d(cat(p, "attentions.", j, "."), ch[i], tlayers[i], context[i], linear_proj);
    }
    if (i + 1 < n) s.conv(p + "downsamplers.0.conv.", ch[i], ch[i], 3);
  }

  if (has_mid) {
    const int64_t mid = ch[n - 1];
    s.resnet("mid_block.resnets.0.", mid, mid, temb);
    s.transformer2d("mid_block.attentions.0.", mid, tlayers[n - 1], context[n - 1], linear_proj);
    s.resnet("mid_block.resnets.1.", mid, mid, temb);
  }

  int64_t prev = ch[n - 1];
  for (size_t i = 0; i < n; ++i) {
    OTTER_CHECK(up[i] == "CrossAttnUpBlock2D" || up[i] == "UpBlock2D", "UNet up block type '", up[i],
                "' is not supported (SD 1.x/2.x use CrossAttnUpBlock2D and UpBlock2D)");
    const bool attn = up[i] == "CrossAttnUpBlock2D";
    const size_t r = n - 1 - i;  // the down block this up block mirrors
    const int64_t out = ch[r];
    const int64_t skip_in = ch[r == 0 ? 0 : r - 1];  // channels of the deepest skip of the mirrored block
    const std::string p = cat("up_blocks.", i, ".");
    const int64_t num = layers[r] + 1;
    for (int64_t j = 0; j < num; ++j) {
      const int64_t skip = j == num - 1 ? skip_in : out;
      s.resnet(cat(p, "resnets.", j, "."), (j == 0 ? prev : out) + skip, out, temb);
      if (attn) s.transformer2d(cat(p, "attentions.", j, "."), out, up_tlayers[i], context[r], linear_proj);
    }
    if (i + 1 < n) s.conv(p + "upsamplers.0.conv.", out, out, 3);
    prev = out;
  }

  s.norm("conv_norm_out.", ch[0]);
  s.conv("conv_out.", ch[0], out_ch, k_out);
  return s.take();
}

std::vector<TensorSpec> vae_tensor_specs(const json& config_in) {
  const json config = with_defaults(ConfigKind::Vae, config_in);
  const std::string_view C = "VAE";
  require_value(config, "act_fn", "silu", C);
  const std::vector<std::string> down = string_list(config, "down_block_types", C);
  const std::vector<std::string> up = string_list(config, "up_block_types", C);
  const size_t n = down.size();
  OTTER_CHECK(n > 0 && up.size() == n, "VAE config has ", n, " down blocks but ", up.size(), " up blocks");
  for (const std::string& t : down)
    OTTER_CHECK(t == "DownEncoderBlock2D", "VAE down block type '", t, "' is not supported (expected DownEncoderBlock2D)");
  for (const std::string& t : up)
    OTTER_CHECK(t == "UpDecoderBlock2D", "VAE up block type '", t, "' is not supported (expected UpDecoderBlock2D)");
  const std::vector<int64_t> ch = config_int_list(config, "block_out_channels", n, C);
  const int64_t layers = config_int(config, "layers_per_block", C);
  const int64_t latent = config_int(config, "latent_channels", C);
  const int64_t in_ch = config_int(config, "in_channels", C), out_ch = config_int(config, "out_channels", C);
  const bool mid_attn = config.value("mid_block_add_attention", true);

  SpecList s;
  auto mid_block = [&](const std::string& p, int64_t c) {
    s.resnet(p + "resnets.0.", c, c, 0);
    if (mid_attn) s.vae_attention(p + "attentions.0.", c);
    s.resnet(p + "resnets.1.", c, c, 0);
  };

  s.conv("encoder.conv_in.", in_ch, ch[0], 3);
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = i == 0 ? ch[0] : ch[i - 1];
    const std::string p = cat("encoder.down_blocks.", i, ".");
    for (int64_t j = 0; j < layers; ++j) s.resnet(cat(p, "resnets.", j, "."), j == 0 ? in : ch[i], ch[i], 0);
    if (i + 1 < n) s.conv(p + "downsamplers.0.conv.", ch[i], ch[i], 3);
  }
  mid_block("encoder.mid_block.", ch[n - 1]);
  s.norm("encoder.conv_norm_out.", ch[n - 1]);
  s.conv("encoder.conv_out.", ch[n - 1], 2 * latent, 3);  // mean and log-variance

  s.conv("decoder.conv_in.", latent, ch[n - 1], 3);
  mid_block("decoder.mid_block.", ch[n - 1]);
  int64_t prev = ch[n - 1];
  for (size_t i = 0; i < n; ++i) {
    const int64_t out = ch[n - 1 - i];
    const std::string p = cat("decoder.up_blocks.", i, ".");
    for (int64_t j = 0; j <= layers; ++j) s.resnet(cat(p, "resnets.", j, "."), j == 0 ? prev : out, out, 0);
    if (i + 1 < n) s.conv(p + "upsamplers.0.conv.", out, out, 3);
    prev = out;
  }
  s.norm("decoder.conv_norm_out.", ch[0]);
  s.conv("decoder.conv_out.", ch[0], out_ch, 3);

  if (config.value("use_quant_conv", true)) s.conv("quant_conv.", 2 * latent, 2 * latent, 1);
  if (config.value("use_post_quant_conv", true)) s.conv("post_quant_conv.", latent, latent, 1);
  return s.take();
}

std::vector<TensorSpec> text_encoder_tensor_specs(const json& config_in) {
  const json config = with_defaults(ConfigKind::TextEncoder, config_in);
  const std::string_view C = "text encoder";
  const int64_t hidden = config_int(config, "hidden_size", C);
  const int64_t inter = config_int(config, "intermediate_size", C);
  const int64_t layers = config_int(config, "num_hidden_layers", C);
  const int64_t vocab = config_int(config, "vocab_size", C);
  const int64_t positions = config_int(config, "max_position_embeddings", C);

  SpecList s;
  s.add("text_model.embeddings.token_embedding.weight", {vocab, hidden});
  s.add("text_model.embeddings.position_embedding.weight", {positions, hidden});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = cat("text_model.encoder.layers.", l, ".");
    for (const char* proj : {"q_proj.", "k_proj.", "v_proj.", "out_proj."})
      s.linear(p + "self_attn." + proj, hidden, hidden);
    s.norm(p + "layer_norm1.", hidden);
    s.linear(p + "mlp.fc1.", hidden, inter);
    s.linear(p + "mlp.fc2.", inter, hidden);
    s.norm(p + "layer_norm2.", hidden);
  }
  s.norm("text_model.final_layer_norm.", hidden);
  return s.take();
}

int64_t count_parameters(const std::vector<TensorSpec>& specs) {
  int64_t total = 0;
  for (const TensorSpec& t : specs) total += t.shape.numel();
  return total;
}

int64_t count_unet_parameters(const json& config) { return count_parameters(unet_tensor_specs(config)); }
int64_t count_vae_parameters(const json& config) { return count_parameters(vae_tensor_specs(config)); }
int64_t count_text_encoder_parameters(const json& config) { return count_parameters(text_encoder_tensor_specs(config)); }

}  // namespace otter

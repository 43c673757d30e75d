#include "models/vae.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/error.h"
#include "io/json_file.h"

namespace otter {
namespace {

using nlohmann::json;

constexpr float kVaeNormEps = 1e-6f;  // every GroupNorm of AutoencoderKL

void check_block_types(const json& j, const char* key, const char* wanted, size_t blocks, const std::string& origin) {
  const auto types = config_value_or(j, key, std::vector<std::string>(blocks, wanted), origin);
  OTTER_CHECK(types.size() == blocks, origin, ": '", key, "' has ", types.size(), " entries for ", blocks,
              " block_out_channels");
  for (const std::string& t : types)
    OTTER_CHECK(t == wanted, origin, ": block type '", t, "' in '", key, "' is not supported (only ", wanted, ")");
}

}  // namespace

VaeConfig VaeConfig::from_json(const json& j, const std::string& origin) {
  OTTER_CHECK(j.is_object(), origin, ": expected a JSON object");
  const std::string cls = config_value_or<std::string>(j, "_class_name", "AutoencoderKL", origin);
  OTTER_CHECK(cls == "AutoencoderKL", origin, ": _class_name is '", cls,
              "', expected 'AutoencoderKL' (is this the vae/config.json?)");
  VaeConfig c;
  c.in_channels = config_value_or(j, "in_channels", 3, origin);
  c.out_channels = config_value_or(j, "out_channels", 3, origin);
  c.latent_channels = config_value_or(j, "latent_channels", 4, origin);
  c.block_out_channels = config_value_or(j, "block_out_channels", std::vector<int>{64}, origin);
  c.layers_per_block = config_value_or(j, "layers_per_block", 1, origin);
  c.norm_num_groups = config_value_or(j, "norm_num_groups", 32, origin);
  c.scaling_factor = config_value_or(j, "scaling_factor", 0.18215f, origin);
  c.shift_factor = config_value_or(j, "shift_factor", 0.0f, origin);
  c.mid_block_add_attention = config_value_or(j, "mid_block_add_attention", true, origin);
  c.use_quant_conv = config_value_or(j, "use_quant_conv", true, origin);
  c.use_post_quant_conv = config_value_or(j, "use_post_quant_conv", true, origin);
  const std::string act = config_value_or<std::string>(j, "act_fn", "silu", origin);
  OTTER_CHECK(act == "silu", origin, ": act_fn '", act, "' is not supported (only silu)");
  for (const char* key : {"latents_mean", "latents_std"}) {
    const auto it = j.find(key);
    OTTER_CHECK(it == j.end() || it->is_null(), origin, ": '", key, "' is set; otter supports only VAEs scaled by "
                "scaling_factor/shift_factor (SD 1.x/2.x)");
  }
  const size_t n = c.block_out_channels.size();
  OTTER_CHECK(n >= 1, origin, ": block_out_channels is empty");
  check_block_types(j, "down_block_types", "DownEncoderBlock2D", n, origin);
  check_block_types(j, "up_block_types", "UpDecoderBlock2D", n, origin);
  // Checked before it divides the channel counts below (a 0 was a division by zero: the fuzzer).
  OTTER_CHECK(c.norm_num_groups >= 1, origin, ": norm_num_groups must be at least 1, got ", c.norm_num_groups);
  OTTER_CHECK(c.in_channels >= 1 && c.out_channels >= 1 && c.latent_channels >= 1, origin,
              ": in_channels, out_channels and latent_channels must be at least 1, got ", c.in_channels, ", ",
              c.out_channels, " and ", c.latent_channels);
  for (const int ch : c.block_out_channels)
    OTTER_CHECK(ch > 0 && ch % c.norm_num_groups == 0, origin, ": block_out_channels entry ", ch,
                " is not a positive multiple of norm_num_groups = ", c.norm_num_groups);
  OTTER_CHECK(c.layers_per_block >= 1 && c.scaling_factor != 0.0f, origin,
              ": layers_per_block must be >= 1 and scaling_factor non-zero");
  return c;
}

VaeConfig VaeConfig::from_file(const std::filesystem::path& path) {
  return from_json(read_json_file(path, "vae config"), path.string());
}

Tensor LatentDistribution::sample(Backend& be, NoiseGenerator& noise) const {
  Tensor eps = Tensor::empty(mean.shape(), DType::F32);
  noise.randn(eps.f32(), static_cast<size_t>(eps.numel()));
  return be.add(mean, be.mul(std, eps));
}

// ---- mid block ----

VaeMidBlock::VaeMidBlock(ParamLoader p, int64_t channels, int groups, bool attention) {
  resnets_.emplace_back(p.child("resnets.0"), channels, channels, 0, groups, kVaeNormEps);
  if (attention) attention_.emplace(p.child("attentions.0"), channels, groups, kVaeNormEps);
  resnets_.emplace_back(p.child("resnets.1"), channels, channels, 0, groups, kVaeNormEps);
}

Tensor VaeMidBlock::forward(Backend& be, const Tensor& x) {
  Tensor h = resnets_[0].forward(be, x);
  if (attention_) h = attention_->forward(be, h);
  return resnets_[1].forward(be, h);
}

// ---- decoder ----

VaeDecoder::VaeDecoder(ParamLoader p, const VaeConfig& c) : groups_(c.norm_num_groups) {
  const auto& ch = c.block_out_channels;
  const size_t n = ch.size();
  conv_in_ = load_conv(p, "conv_in", c.latent_channels, ch[n - 1], 3);
  mid_.emplace(p.child("mid_block"), ch[n - 1], groups_, c.mid_block_add_attention);
  // Up block i runs at the channel width of down block n-1-i; all but the last double H, W.
  for (size_t i = 0; i < n; ++i) {
    ParamLoader b = p.child(cat("up_blocks.", i));
    UpBlock block;
    const int64_t in = ch[i == 0 ? n - 1 : n - i], out = ch[n - 1 - i];
    for (int j = 0; j < c.layers_per_block + 1; ++j)
      block.resnets.emplace_back(b.child(cat("resnets.", j)), j == 0 ? in : out, out, 0, groups_, kVaeNormEps);
    if (i + 1 < n) block.upsampler.emplace(b.child("upsamplers.0"), out);
    up_.push_back(std::move(block));
  }
  norm_out_ = load_norm(p, "conv_norm_out", ch[0], kVaeNormEps);
  conv_out_ = load_conv(p, "conv_out", ch[0], c.out_channels, 3);
}

Tensor VaeDecoder::forward(Backend& be, const Tensor& z, const DebugHook& hook) {
  Tensor h = be.conv2d(z, conv_in_);
  if (hook) hook("decoder.conv_in", h);
  h = mid_->forward(be, h);
  if (hook) hook("decoder.mid_block", h);
  for (size_t i = 0; i < up_.size(); ++i) {
    for (ResnetBlock2D& r : up_[i].resnets) h = r.forward(be, h);
    if (up_[i].upsampler) h = up_[i].upsampler->forward(be, h);
    if (hook) hook(cat("decoder.up_blocks.", i), h);
    // Each up block works at a new resolution and no later one asks for the sizes it used: its
    // cached blocks go back now (at 512x512 they grew the decoder's footprint by 1.4 GB).
    be.release_cached_memory();
  }
  if (hook) hook("decoder.conv_norm_out", be.group_norm(h, groups_, norm_out_));
  return be.conv2d(h, group_norm_silu(norm_out_, groups_), conv_out_);
}

// ---- encoder ----

VaeEncoder::VaeEncoder(ParamLoader p, const VaeConfig& c) : groups_(c.norm_num_groups) {
  const auto& ch = c.block_out_channels;
  const size_t n = ch.size();
  conv_in_ = load_conv(p, "conv_in", c.in_channels, ch[0], 3);
  for (size_t i = 0; i < n; ++i) {
    ParamLoader b = p.child(cat("down_blocks.", i));
    DownBlock block;
    const int64_t in = ch[i == 0 ? 0 : i - 1], out = ch[i];
    for (int j = 0; j < c.layers_per_block; ++j)
      block.resnets.emplace_back(b.child(cat("resnets.", j)), j == 0 ? in : out, out, 0, groups_, kVaeNormEps);
    // AutoencoderKL's encoder uses downsample_padding 0: pad right/bottom by one, stride-2 conv.
    if (i + 1 < n) block.downsampler.emplace(b.child("downsamplers.0"), out, /*padding=*/0);
    down_.push_back(std::move(block));
  }
  mid_.emplace(p.child("mid_block"), ch[n - 1], groups_, c.mid_block_add_attention);
  norm_out_ = load_norm(p, "conv_norm_out", ch[n - 1], kVaeNormEps);
  conv_out_ = load_conv(p, "conv_out", ch[n - 1], 2 * c.latent_channels, 3);  // mean and logvar
}

Tensor VaeEncoder::forward(Backend& be, const Tensor& image, const DebugHook& hook) {
  Tensor h = be.conv2d(image, conv_in_);
  if (hook) hook("encoder.conv_in", h);
  for (size_t i = 0; i < down_.size(); ++i) {
    for (ResnetBlock2D& r : down_[i].resnets) h = r.forward(be, h);
    if (down_[i].downsampler) h = down_[i].downsampler->forward(be, h);
    if (hook) hook(cat("encoder.down_blocks.", i), h);
    be.release_cached_memory();  // as in the decoder: each block leaves its resolution for good
  }
  h = mid_->forward(be, h);
  if (hook) hook("encoder.mid_block", h);
  if (hook) hook("encoder.conv_norm_out", be.group_norm(h, groups_, norm_out_));
  return be.conv2d(h, group_norm_silu(norm_out_, groups_), conv_out_);
}

// ---- AutoencoderKL ----

Vae::Vae(const VaeConfig& config, Weights& weights) : config_(config) {
  ParamLoader root(weights, parameter_count_, "", &prepared_);
  const int64_t latent = config_.latent_channels;
  decoder_.emplace(root.child("decoder"), config_);
  if (config_.use_post_quant_conv) post_quant_conv_ = load_conv(root, "post_quant_conv", latent, latent, 1);
  // txt2img needs only the decoder; files without the encoder (decoder-only exports) still load.
  if (root.has("encoder.conv_in.weight")) {
    encoder_.emplace(root.child("encoder"), config_);
    if (config_.use_quant_conv) quant_conv_ = load_conv(root, "quant_conv", 2 * latent, 2 * latent, 1);
  }
}

Tensor Vae::decode(Backend& be, const Tensor& latents, const DebugHook& hook) {
  Tensor z = be.scale(latents.to(DType::F32).contiguous(), 1.0f / config_.scaling_factor);
  if (config_.shift_factor != 0.0f) z = be.add(z, Tensor::full(Shape{1}, config_.shift_factor));
  return decode_raw(be, z, hook);
}

Tensor Vae::decode_raw(Backend& be, const Tensor& z_in, const DebugHook& hook) {
  OTTER_CHECK(z_in.rank() == 4 && z_in.dim(1) == config_.latent_channels, "VAE decode: latents must be [B, ",
              config_.latent_channels, ", h, w], got ", z_in.describe());
  Tensor z = z_in.to(DType::F32).contiguous();
  if (post_quant_conv_) {
    z = be.conv2d(z, *post_quant_conv_);
    if (hook) hook("post_quant_conv", z);
  }
  return decoder_->forward(be, z, hook);
}

LatentDistribution Vae::encode(Backend& be, const Tensor& image_in, const DebugHook& hook) {
  OTTER_CHECK(encoder_.has_value(), "VAE encode: this VAE's weights have no encoder (encoder.* tensors)");
  const int div = config_.downscale_factor();
  OTTER_CHECK(image_in.rank() == 4 && image_in.dim(1) == config_.in_channels && image_in.dim(2) % div == 0 &&
                  image_in.dim(3) % div == 0,
              "VAE encode: image must be [B, ", config_.in_channels, ", H, W] with H and W multiples of ", div,
              ", got ", image_in.describe());
  Tensor moments = encoder_->forward(be, image_in.to(DType::F32).contiguous(), hook);
  if (quant_conv_) moments = be.conv2d(moments, *quant_conv_);
  if (hook) hook("moments", moments);

  const int64_t latent = config_.latent_channels;
  LatentDistribution d;
  d.mean = moments.slice(1, 0, latent).contiguous();
  // Clamp and exp have no backend op; they touch only latent-sized data, so they run here.
  d.logvar = moments.slice(1, latent, 2 * latent).clone();  // a copy: clamped in place below
  d.std = Tensor::empty(d.logvar.shape(), DType::F32);
  float* lv = d.logvar.f32();
  float* sd = d.std.f32();
  for (int64_t i = 0; i < d.logvar.numel(); ++i) {
    lv[i] = std::clamp(lv[i], -30.0f, 20.0f);
    sd[i] = std::exp(0.5f * lv[i]);
  }
  return d;
}

Tensor Vae::scale_latents(Backend& be, const Tensor& z) const {
  Tensor shifted = z.to(DType::F32).contiguous();
  if (config_.shift_factor != 0.0f) shifted = be.add(shifted, Tensor::full(Shape{1}, -config_.shift_factor));
  return be.scale(shifted, config_.scaling_factor);
}

}  // namespace otter

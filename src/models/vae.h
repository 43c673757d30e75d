#pragma once
// The Stable Diffusion VAE, diffusers' AutoencoderKL: the decoder turns latents into images
// ([-1, 1] range, NCHW), the encoder turns images into a diagonal Gaussian over latents.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/blocks.h"
#include "sampling/noise.h"

namespace otter {

struct VaeConfig {
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> block_out_channels{64};
  int layers_per_block = 1;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;
  float shift_factor = 0.0f;  // null in SD 1.x/2.x configs
  bool mid_block_add_attention = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;

  // Parses a diffusers AutoencoderKL config.json; throws otter::Error naming `origin` for
  // malformed keys or unsupported block types.
  static VaeConfig from_json(const nlohmann::json& config, const std::string& origin = "vae config");
  static VaeConfig from_file(const std::filesystem::path& config_json);

  // Image pixels per latent position along each axis (8 for SD).
  int downscale_factor() const { return 1 << (block_out_channels.size() - 1); }
};

// The encoder's output distribution. `moments` is quant_conv's output; mean and logvar are its
// two channel halves (logvar clamped to [-30, 20] as diffusers does), std = exp(logvar / 2).
struct LatentDistribution {
  Tensor mean, logvar, std;
  // mean + std * noise, with noise drawn as ONE randn call of mean's size (as diffusers'
  // DiagonalGaussianDistribution.sample(generator) does), so seeds reproduce diffusers.
  Tensor sample(Backend& be, NoiseGenerator& noise) const;
};

// The VAE's middle: resnet, optional single-head attention, resnet (no time embedding).
class VaeMidBlock {
 public:
  VaeMidBlock(ParamLoader p, int64_t channels, int groups, bool attention);
  Tensor forward(Backend& be, const Tensor& x);

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::optional<SpatialSelfAttention> attention_;
};

class VaeDecoder {
 public:
  VaeDecoder(ParamLoader p, const VaeConfig& c);
  // z [B, latent_channels, h, w] (after post_quant_conv) -> [B, out_channels, 8h, 8w]
  Tensor forward(Backend& be, const Tensor& z, const DebugHook& hook);

 private:
  struct UpBlock {
    std::vector<ResnetBlock2D> resnets;
    std::optional<Upsample2D> upsampler;
  };
  int groups_;
  Conv2dWeights conv_in_, conv_out_;
  std::optional<VaeMidBlock> mid_;
  std::vector<UpBlock> up_;
  NormWeights norm_out_;
};

class VaeEncoder {
 public:
  VaeEncoder(ParamLoader p, const VaeConfig& c);
  // image [B, in_channels, H, W] -> [B, 2 * latent_channels, H/8, W/8] (before quant_conv)
  Tensor forward(Backend& be, const Tensor& image, const DebugHook& hook);

 private:
  struct DownBlock {
    std::vector<ResnetBlock2D> resnets;
    std::optional<Downsample2D> downsampler;
  };
  int groups_;
  Conv2dWeights conv_in_, conv_out_;
  std::vector<DownBlock> down_;
  std::optional<VaeMidBlock> mid_;
  NormWeights norm_out_;
};

class Vae {
 public:
  // Loads the decoder and, when the weights contain `encoder.*` tensors, the encoder. Call
  // weights.check_all_used() afterwards to reject tensors the config does not explain.
  Vae(const VaeConfig& config, Weights& weights);

  // Latents as the sampler produces them: divides by scaling_factor (and adds shift_factor)
  // first, then decodes. Output [B, out_channels, 8h, 8w], roughly in [-1, 1], not clamped.
  Tensor decode(Backend& be, const Tensor& latents, const DebugHook& hook = {});
  // Decodes z exactly as given (z = latents / scaling_factor), starting at post_quant_conv.
  // Hooks: post_quant_conv, decoder.conv_in, decoder.mid_block, decoder.up_blocks.i,
  // decoder.conv_norm_out (before SiLU).
  Tensor decode_raw(Backend& be, const Tensor& z, const DebugHook& hook = {});

  // image [B, in_channels, H, W] in [-1, 1], H and W multiples of 8. Throws if the weights had
  // no encoder.
  LatentDistribution encode(Backend& be, const Tensor& image, const DebugHook& hook = {});
  // z (an encoder sample) -> latents for the sampler: (z - shift_factor) * scaling_factor.
  Tensor scale_latents(Backend& be, const Tensor& z) const;

  bool has_encoder() const { return encoder_.has_value(); }
  const VaeConfig& config() const { return config_; }
  int64_t parameter_count() const { return parameter_count_; }
  // Gives back what the backend prepared from this component's weights (packed, converted); the
  // next forward prepares them again. For a caller that is done with the component.
  void release_prepared_weights() { prepared_.release(); }
  const PreparedWeightsSet& prepared_weights() const { return prepared_; }

 private:
  VaeConfig config_;
  int64_t parameter_count_ = 0;
  PreparedWeightsSet prepared_;
  std::optional<VaeDecoder> decoder_;
  std::optional<VaeEncoder> encoder_;
  std::optional<Conv2dWeights> quant_conv_, post_quant_conv_;
};

}  // namespace otter

#pragma once
// The Stable Diffusion 1.x/2.x denoiser, diffusers' UNet2DConditionModel: predicts noise (or v)
// for a batch of latents at given timesteps, conditioned on text-encoder states. Built from a
// UNetConfig and weights under their diffusers names; runs on any Backend.
#include <optional>
#include <string>
#include <vector>

#include "models/blocks.h"
#include "models/transformer2d.h"
#include "models/unet_config.h"

namespace otter {

class UNet {
 public:
  // Loads every tensor the config implies from `weights` (diffusers names, no prefix beyond the
  // Weights' own). Shape mismatches and missing tensors throw, naming the tensor. Call
  // weights.check_all_used() afterwards to also reject tensors the config does not explain.
  UNet(const UNetConfig& config, Weights& weights);

  // sample [B, in_channels, H, W] with H and W multiples of config().spatial_divisor();
  // timesteps: F32 (or any numeric dtype) with one value for the whole batch, or one per
  // batch row — values may be fractional; encoder_hidden_states [B, M, cross_attention_dim].
  // Returns [B, out_channels, H, W]. `hook` receives the diffusers-named intermediates
  // (time_proj, time_embedding, conv_in, down_blocks.i.resnets.j, down_blocks.i.attentions.j,
  // down_blocks.i, mid_block, up_blocks.i, conv_norm_out (before SiLU)).
  // The time embedding is computed for a single row when all timesteps are equal (the usual
  // case, CFG's 2N rows included) and broadcast to the batch, so hooks may see 1 row there.
  // `perturbation`: rows whose transformer blocks are changed (PAG, SEG, SLG; row_perturbation.h).
  Tensor forward(Backend& be, const Tensor& sample, const Tensor& timesteps, const Tensor& encoder_hidden_states,
                 const DebugHook& hook = {}, const RowPerturbation* perturbation = nullptr);
  Tensor forward(Backend& be, const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                 const DebugHook& hook = {}, const RowPerturbation* perturbation = nullptr);

  // diffusers' module names of the transformer blocks, in forward order (down, mid, up), e.g.
  // "down_blocks.1.attentions.0.transformer_blocks.0"; a RowPerturbation names blocks by index here.
  const std::vector<std::string>& transformer_block_names() const { return block_names_; }

  const UNetConfig& config() const { return config_; }
  int64_t parameter_count() const { return parameter_count_; }
  // Gives back what the backend prepared from this component's weights (packed, converted); the
  // next forward prepares them again. For a caller that is done with the component.
  void release_prepared_weights() { prepared_.release(); }
  const PreparedWeightsSet& prepared_weights() const { return prepared_; }

 private:
  struct DownBlock {
    std::vector<ResnetBlock2D> resnets;
    std::vector<Transformer2D> attentions;  // empty for DownBlock2D
    std::optional<Downsample2D> downsampler;
  };
  struct UpBlock {
    std::vector<ResnetBlock2D> resnets;
    std::vector<Transformer2D> attentions;  // empty for UpBlock2D
    std::optional<Upsample2D> upsampler;
  };
  struct MidBlock {
    std::vector<ResnetBlock2D> resnets;      // attentions.size() + 1
    std::vector<Transformer2D> attentions;
  };

  // SiLU(time_embedding(time_proj(t))), [1 or B, time_embed_dim]: what every resnet consumes.
  Tensor time_embedding(Backend& be, const Tensor& timesteps, int64_t batch, const DebugHook& hook);
  void check_inputs(const Tensor& sample, const Tensor& context) const;
  // The index of a Transformer2D's first block in block_names_.
  int first_block_of(const std::string& transformer) const;

  UNetConfig config_;
  int64_t parameter_count_ = 0;
  PreparedWeightsSet prepared_;
  Conv2dWeights conv_in_, conv_out_;
  LinearWeights time_linear_1_, time_linear_2_;
  std::vector<DownBlock> down_;
  std::optional<MidBlock> mid_;
  std::vector<UpBlock> up_;
  NormWeights conv_norm_out_;
  std::vector<std::string> block_names_;
};

}  // namespace otter

#pragma once
// Building blocks shared by the UNet and the VAE, written only against the Backend op interface:
// a loader that names and counts parameters, the plain layers (conv, linear, norms), and the
// diffusers modules ResnetBlock2D, Downsample2D, Upsample2D, multi-head attention over token
// sequences and the VAE's single-head spatial self-attention.
#include <cstdint>
#include <functional>
#include <string>

#include "backend/backend.h"
#include "models/row_perturbation.h"
#include "models/weights.h"

namespace otter {

// Called with (diffusers module name, its output) at the points diffusers' forward hooks see,
// so tests can compare every intermediate with the golden files. Empty = no debugging.
using DebugHook = std::function<void(const std::string& name, const Tensor& value)>;

// Fetches a module's tensors under a diffusers name prefix ("down_blocks.0.resnets.1.") and
// adds up their element counts, so each model's parameter_count() is exact by construction.
// It also collects the prepared slots of the layers it builds into the component's set (when it
// has one), so the component can give its prepared weights back (PreparedWeightsSet).
class ParamLoader {
 public:
  ParamLoader(Weights& weights, int64_t& counter, std::string prefix = "", PreparedWeightsSet* prepared = nullptr)
      : weights_(weights), counter_(counter), prefix_(std::move(prefix)), prepared_(prepared) {}

  // A loader for the child module `name` ("resnets.0" -> prefix "...resnets.0.").
  ParamLoader child(const std::string& name) const {
    return ParamLoader(weights_, counter_, prefix_ + name + ".", prepared_);
  }
  // Adds a layer's prepared slot to the component's set; load_linear and load_conv call it, layers
  // loaded another way call it themselves.
  void track(const std::shared_ptr<PreparedWeights>& slot) {
    if (prepared_) prepared_->add(slot);
  }
  Tensor get(const std::string& name, const Shape& expected);
  bool has(const std::string& name) const { return weights_.has(prefix_ + name); }
  // Unmerged LoRA updates of weight `name` (see attach_lora).
  std::vector<LoraBranch> lora(const std::string& name) const { return weights_.lora_branches(prefix_ + name); }
  const std::string& prefix() const { return prefix_; }

 private:
  Weights& weights_;
  int64_t& counter_;
  std::string prefix_;
  PreparedWeightsSet* prepared_;
};

// `name.weight` [out, in, k, k] and `name.bias`; padding k/2 on every side.
Conv2dWeights load_conv(ParamLoader& p, const std::string& name, int64_t in, int64_t out, int64_t kernel,
                        int stride = 1);
// `name.weight` [out, in] and, when `bias`, `name.bias`.
LinearWeights load_linear(ParamLoader& p, const std::string& name, int64_t in, int64_t out, bool bias = true);
// Gives a layer its unmerged LoRA updates (--lora-unmerged): a linear layer two linear ones
// ([rank, in], [out, rank]; 1x1-conv factors reshaped), a conv layer a conv with its own kernel,
// stride and padding and a 1x1 conv. Every load_linear/load_conv calls it; layers loaded another
// way call it themselves.
void attach_lora(LinearWeights& w, const std::vector<LoraBranch>& branches);
void attach_lora(Conv2dWeights& w, const std::vector<LoraBranch>& branches);

// x [B, in] -> [B, out], each run of identical rows computed as ONE row (a GEMM of M = 1) and
// repeated: per-row timestep embeddings then have the bits of a batch where every row has the same
// timestep (embedded once, M = 1) — what lets rows of different requests share a UNet call (otter
// serve's continuous batching) with each row as when its request runs alone.
Tensor linear_per_distinct_row(Backend& be, const Tensor& x, LinearWeights& w);
// A GroupNorm's or LayerNorm's `name.weight` / `name.bias` [channels].
NormWeights load_norm(ParamLoader& p, const std::string& name, int64_t channels, float eps);

// The input transform of a convolution that starts with GroupNorm + SiLU (every resnet
// convolution, every conv_out), for Backend::conv2d to fuse.
inline ConvInputTransform group_norm_silu(const NormWeights& norm, int groups) {
  return {.group_norm = &norm, .groups = groups, .silu = true};
}

// NCHW feature map <-> token sequence [B, H*W, C] (what attention and linear layers consume).
Tensor to_tokens(Backend& be, const Tensor& nchw);
Tensor to_nchw(Backend& be, const Tensor& tokens, int64_t height, int64_t width);

// diffusers ResnetBlock2D ("default" time-scale-shift):
//   h = conv1(SiLU(norm1(x))) [+ time_emb_proj(SiLU(temb))] ; h = conv2(SiLU(norm2(h)))
//   out = (shortcut(x) + h) / output_scale, shortcut = 1x1 conv_shortcut when in != out.
class ResnetBlock2D {
 public:
  // temb_channels 0 = no time embedding (the VAE's resnets).
  ResnetBlock2D(ParamLoader p, int64_t in, int64_t out, int64_t temb_channels, int groups, float eps,
                float output_scale = 1.0f);
  // `temb_silu`: SiLU(time embedding), [1 or B, temb_channels]; the UNet applies the SiLU once
  // for all resnets (diffusers applies the same SiLU inside each one, giving identical values).
  Tensor forward(Backend& be, const Tensor& x, const Tensor* temb_silu = nullptr);

 private:
  int groups_;
  float output_scale_;
  NormWeights norm1_, norm2_;
  Conv2dWeights conv1_, conv2_, shortcut_;
  LinearWeights time_proj_;
  bool has_shortcut_ = false, has_time_ = false;
};

// diffusers Downsample2D with a conv: 3x3 stride 2. padding > 0 pads every side (the UNet's
// downsample_padding = 1); padding 0 pads only right and bottom by one (the VAE encoder).
class Downsample2D {
 public:
  Downsample2D(ParamLoader p, int64_t channels, int padding);
  Tensor forward(Backend& be, const Tensor& x) { return be.conv2d(x, conv_); }

 private:
  Conv2dWeights conv_;
};

// diffusers Upsample2D with a conv: nearest-neighbour x2, then 3x3 conv.
class Upsample2D {
 public:
  Upsample2D(ParamLoader p, int64_t channels);
  Tensor forward(Backend& be, const Tensor& x) { return be.conv2d(x, {.upsample_nearest2x = true}, conv_); }

 private:
  Conv2dWeights conv_;
};

// diffusers Attention as used in BasicTransformerBlock: q from x, k/v from the context (x itself
// for self-attention), q/k/v without bias, to_out.0 with bias, scale 1/sqrt(head_dim).
class MultiHeadAttention {
 public:
  MultiHeadAttention(ParamLoader p, int64_t query_dim, int64_t context_dim, int heads);
  // x [B, N, query_dim], context [B, M, context_dim] or null for self-attention; `residual` (the
  // output's shape, or null) is added by the output projection. `perturbed` (self-attention only):
  // their rows get PAG's identity attention or SEG's blurred queries (row_perturbation.h); the
  // other rows are computed as without them.
  Tensor forward(Backend& be, const Tensor& x, const Tensor* context = nullptr, const Tensor* residual = nullptr,
                 const BlockPerturbations* perturbed = nullptr);

 private:
  int heads_;
  float scale_;
  LinearWeights to_q_, to_k_, to_v_, to_out_;
};

// The VAE mid-block attention: GroupNorm, one head over all H*W positions (scale 1/sqrt(C)),
// output projection, residual. Accepts the current diffusers names (to_q/to_k/to_v/to_out.0)
// and the legacy ones (query/key/value/proj_attn) of older diffusers VAEs.
class SpatialSelfAttention {
 public:
  SpatialSelfAttention(ParamLoader p, int64_t channels, int groups, float eps);
  Tensor forward(Backend& be, const Tensor& x);

 private:
  int groups_;
  float scale_;
  NormWeights norm_;
  LinearWeights q_, k_, v_, out_;
};

}  // namespace otter

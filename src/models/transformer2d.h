#pragma once
// diffusers Transformer2DModel (continuous input) with its BasicTransformerBlocks: the spatial
// transformer of SD's UNet that lets image features attend to themselves and to the text.
#include <vector>

#include "models/blocks.h"

namespace otter {

// LN -> self-attention -> +res; LN -> cross-attention to the text states -> +res;
// LN -> GEGLU feed-forward (Linear to 2*4*C, value * GELU(gate), Linear back) -> +res.
class BasicTransformerBlock {
 public:
  BasicTransformerBlock(ParamLoader p, int64_t dim, int64_t context_dim, int heads);
  // x [B, N, dim] is updated in place (it must be a tensor the caller owns, not a shared view).
  // `perturbed`: the perturbations that apply to this block (disjoint rows), each computed on its rows.
  void forward(Backend& be, Tensor& x, const Tensor& context, const BlockPerturbations* perturbed = nullptr);

 private:
  NormWeights norm1_, norm2_, norm3_;
  MultiHeadAttention attn1_, attn2_;
  LinearWeights ff_in_, ff_out_;
};

// GroupNorm (eps 1e-6) -> proj_in (1x1 Conv2d, or Linear on tokens when use_linear_projection)
// -> transformer blocks -> proj_out -> + input.
class Transformer2D {
 public:
  // `first_block`: the UNet-wide index of its first transformer block (row perturbations name
  // blocks by these indices).
  Transformer2D(ParamLoader p, int64_t channels, int64_t context_dim, int heads, int layers, int groups,
                bool linear_projection, int first_block = 0);
  // x [B, C, H, W], context [B, M, context_dim] -> [B, C, H, W]
  Tensor forward(Backend& be, const Tensor& x, const Tensor& context, const RowPerturbation* perturbation = nullptr);
  int num_blocks() const { return static_cast<int>(blocks_.size()); }

 private:
  int groups_, first_block_;
  NormWeights norm_;
  LinearWeights proj_in_, proj_out_;  // SD1's 1x1 convolutions as the linear maps they are
  std::vector<BasicTransformerBlock> blocks_;
};

}  // namespace otter

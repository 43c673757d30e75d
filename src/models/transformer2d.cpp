#include "models/transformer2d.h"

#include "core/error.h"

namespace otter {
namespace {
constexpr float kLayerNormEps = 1e-5f;
constexpr float kTransformerGroupNormEps = 1e-6f;
}  // namespace

BasicTransformerBlock::BasicTransformerBlock(ParamLoader p, int64_t dim, int64_t context_dim, int heads)
    : norm1_(load_norm(p, "norm1", dim, kLayerNormEps)),
      norm2_(load_norm(p, "norm2", dim, kLayerNormEps)),
      norm3_(load_norm(p, "norm3", dim, kLayerNormEps)),
      attn1_(p.child("attn1"), dim, dim, heads),
      attn2_(p.child("attn2"), dim, context_dim, heads),
      ff_in_(load_linear(p, "ff.net.0.proj", dim, 2 * 4 * dim)),
      ff_out_(load_linear(p, "ff.net.2", 4 * dim, dim)) {}

void BasicTransformerBlock::forward(Backend& be, Tensor& x, const Tensor& context) {
  be.add_inplace(x, attn1_.forward(be, be.layer_norm(x, norm1_)));
  be.add_inplace(x, attn2_.forward(be, be.layer_norm(x, norm2_), &context));
  be.add_inplace(x, be.linear(be.geglu(be.linear(be.layer_norm(x, norm3_), ff_in_)), ff_out_));
}

Transformer2D::Transformer2D(ParamLoader p, int64_t channels, int64_t context_dim, int heads, int layers, int groups,
                             bool linear_projection)
    : groups_(groups), linear_projection_(linear_projection) {
  norm_ = load_norm(p, "norm", channels, kTransformerGroupNormEps);
  // SD1 checkpoints store proj_in/proj_out as 1x1 convolutions [C, C, 1, 1], SD2 as Linear [C, C].
  if (linear_projection) {
    proj_in_linear_ = load_linear(p, "proj_in", channels, channels);
  } else {
    proj_in_conv_ = load_conv(p, "proj_in", channels, channels, 1);
  }
  blocks_.reserve(static_cast<size_t>(layers));
  for (int i = 0; i < layers; ++i)
    blocks_.emplace_back(p.child(cat("transformer_blocks.", i)), channels, context_dim, heads);
  if (linear_projection) {
    proj_out_linear_ = load_linear(p, "proj_out", channels, channels);
  } else {
    proj_out_conv_ = load_conv(p, "proj_out", channels, channels, 1);
  }
}

Tensor Transformer2D::forward(Backend& be, const Tensor& x, const Tensor& context) {
  const int64_t height = x.dim(2), width = x.dim(3);
  const Tensor normed = be.group_norm(x, groups_, norm_);
  // Every path below yields a tensor owned here (fresh op output or its copy), which the
  // transformer blocks may then update in place.
  Tensor tokens = linear_projection_ ? be.linear(to_tokens(normed), proj_in_linear_)
                                     : to_tokens(be.conv2d(normed, proj_in_conv_));
  for (BasicTransformerBlock& block : blocks_) block.forward(be, tokens, context);
  Tensor out = linear_projection_ ? to_nchw(be.linear(tokens, proj_out_linear_), height, width)
                                  : be.conv2d(to_nchw(tokens, height, width), proj_out_conv_);
  be.add_inplace(out, x);
  return out;
}

}  // namespace otter

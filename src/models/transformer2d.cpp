#include "models/transformer2d.h"

#include <algorithm>
#include <utility>
#include <vector>

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

void BasicTransformerBlock::forward(Backend& be, Tensor& x, const Tensor& context, const BlockPerturbations* perturbed) {
  std::vector<std::pair<int64_t, int64_t>> skipped;
  if (perturbed)
    for (const RowPerturbation* p : *perturbed)
      if (p->kind == BlockPerturbation::SkipBlock) skipped.emplace_back(p->row_begin, p->row_end);
  if (!skipped.empty()) {
    // The skipped rows keep their input; the runs of rows between them run the block alone, with
    // the other perturbations that fall on them moved to their rows.
    std::sort(skipped.begin(), skipped.end());
    const auto run = [&](int64_t a, int64_t b) {
      if (a >= b) return;
      std::vector<RowPerturbation> moved;
      for (const RowPerturbation* p : *perturbed) {
        if (p->kind == BlockPerturbation::SkipBlock || p->row_end <= a || p->row_begin >= b) continue;
        RowPerturbation m = *p;
        m.row_begin = std::max(p->row_begin, a) - a;
        m.row_end = std::min(p->row_end, b) - a;
        m.next = nullptr;
        moved.push_back(m);
      }
      BlockPerturbations inner;
      for (const RowPerturbation& m : moved) inner.push_back(&m);
      Tensor rows = x.slice(0, a, b).clone();
      forward(be, rows, context.slice(0, a, b).contiguous(), inner.empty() ? nullptr : &inner);
      x.slice(0, a, b).copy_from(rows);
    };
    int64_t row = 0;
    for (const auto& [r0, r1] : skipped) {
      run(row, r0);
      row = r1;
    }
    run(row, x.dim(0));
    return;
  }
  // Each skip connection is added by the output projection as it writes its result.
  x = attn1_.forward(be, be.layer_norm(x, norm1_), nullptr, &x, perturbed);
  x = attn2_.forward(be, be.layer_norm(x, norm2_), &context, &x);
  x = be.linear(be.linear_geglu(be.layer_norm(x, norm3_), ff_in_), ff_out_, x);
}

namespace {

// SD1 checkpoints store proj_in/proj_out as 1x1 convolutions [C, C, 1, 1], SD2 as Linear [C, C].
// A 1x1 convolution is the same linear map applied to every pixel, so both load as a linear layer
// on the tokens: the convolution's form cost two NCHW <-> NHWC conversions more per projection
// (the f16 path ran them at 220 GFLOP/s against 330 for the same matmul as a linear layer).
LinearWeights load_projection(ParamLoader& p, const std::string& name, int64_t channels, bool linear) {
  if (linear) return load_linear(p, name, channels, channels);
  LinearWeights w;
  w.weight = p.get(name + ".weight", Shape{channels, channels, 1, 1}).reshape(Shape{channels, channels});
  w.bias = p.get(name + ".bias", Shape{channels});
  attach_lora(w, p.lora(name + ".weight"));
  p.track(w.prepared);
  return w;
}

}  // namespace

Transformer2D::Transformer2D(ParamLoader p, int64_t channels, int64_t context_dim, int heads, int layers, int groups,
                             bool linear_projection, int first_block)
    : groups_(groups), first_block_(first_block) {
  norm_ = load_norm(p, "norm", channels, kTransformerGroupNormEps);
  proj_in_ = load_projection(p, "proj_in", channels, linear_projection);
  blocks_.reserve(static_cast<size_t>(layers));
  for (int i = 0; i < layers; ++i)
    blocks_.emplace_back(p.child(cat("transformer_blocks.", i)), channels, context_dim, heads);
  proj_out_ = load_projection(p, "proj_out", channels, linear_projection);
}

Tensor Transformer2D::forward(Backend& be, const Tensor& x, const Tensor& context,
                             const RowPerturbation* perturbation) {
  const int64_t height = x.dim(2), width = x.dim(3);
  // The projection's output is owned here, so the transformer blocks may update it in place.
  Tensor tokens = be.linear(to_tokens(be, be.group_norm(x, groups_, norm_)), proj_in_);
  BlockPerturbations here;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    here.clear();
    for (const RowPerturbation* p = perturbation; p; p = p->next)
      if (p->applies_to_block(first_block_ + static_cast<int>(i))) here.push_back(p);
    blocks_[i].forward(be, tokens, context, here.empty() ? nullptr : &here);
  }
  Tensor out = to_nchw(be, be.linear(tokens, proj_out_), height, width);
  be.add_inplace(out, x);
  return out;
}

}  // namespace otter

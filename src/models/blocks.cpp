#include "models/blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "models/query_blur.h"

namespace otter {

Tensor ParamLoader::get(const std::string& name, const Shape& expected) {
  Tensor t = weights_.get(prefix_ + name, expected);
  counter_ += t.numel();
  return t;
}

Conv2dWeights load_conv(ParamLoader& p, const std::string& name, int64_t in, int64_t out, int64_t kernel, int stride) {
  Conv2dWeights w;
  w.weight = p.get(name + ".weight", Shape{out, in, kernel, kernel});
  w.bias = p.get(name + ".bias", Shape{out});
  w.stride = stride;
  const int pad = static_cast<int>(kernel / 2);
  w.pad_top = w.pad_bottom = w.pad_left = w.pad_right = pad;
  attach_lora(w, p.lora(name + ".weight"));
  p.track(w.prepared);
  return w;
}

LinearWeights load_linear(ParamLoader& p, const std::string& name, int64_t in, int64_t out, bool bias) {
  LinearWeights w;
  w.weight = p.get(name + ".weight", Shape{out, in});
  if (bias) w.bias = p.get(name + ".bias", Shape{out});
  attach_lora(w, p.lora(name + ".weight"));
  p.track(w.prepared);
  return w;
}

void attach_lora(LinearWeights& w, const std::vector<LoraBranch>& branches) {
  if (branches.empty()) return;
  w.lora = std::make_shared<std::vector<LinearLora>>();
  for (const LoraBranch& b : branches) {
    LinearLora l;
    const int64_t rank = b.down.dim(0);
    l.down.weight = b.down.contiguous().reshape(Shape{rank, b.down.numel() / rank});
    l.up.weight = b.up.contiguous().reshape(Shape{b.up.dim(0), rank});
    l.scale = b.scale;
    w.lora->push_back(std::move(l));
  }
}

void attach_lora(Conv2dWeights& w, const std::vector<LoraBranch>& branches) {
  if (branches.empty()) return;
  w.lora = std::make_shared<std::vector<ConvLora>>();
  for (const LoraBranch& b : branches) {
    ConvLora l;
    const int64_t rank = b.down.dim(0);
    l.down = w;  // kernel geometry, stride and padding of the layer itself
    l.down.lora.reset();
    l.down.prepared = std::make_shared<PreparedWeights>();  // its own weights, not the layer's
    l.down.bias = Tensor();
    l.down.weight = b.down.contiguous().reshape(Shape{rank, w.weight.dim(1), w.weight.dim(2), w.weight.dim(3)});
    l.up.weight = b.up.contiguous().reshape(Shape{b.up.dim(0), rank, 1, 1});
    l.scale = b.scale;
    w.lora->push_back(std::move(l));
  }
}

NormWeights load_norm(ParamLoader& p, const std::string& name, int64_t channels, float eps) {
  NormWeights w;
  w.gamma = p.get(name + ".weight", Shape{channels});
  w.beta = p.get(name + ".bias", Shape{channels});
  w.eps = eps;
  return w;
}

Tensor to_tokens(Backend& be, const Tensor& nchw) {
  OTTER_CHECK(nchw.rank() == 4, "to_tokens needs [N, C, H, W], got ", nchw.describe());
  const int64_t n = nchw.dim(0), c = nchw.dim(1), hw = nchw.dim(2) * nchw.dim(3);
  return be.batched_transpose(nchw.contiguous().reshape(Shape{n, c, hw}));
}

Tensor to_nchw(Backend& be, const Tensor& tokens, int64_t height, int64_t width) {
  OTTER_CHECK(tokens.rank() == 3 && tokens.dim(1) == height * width, "to_nchw: ", tokens.describe(),
              " is not a sequence of ", height, "x", width, " positions");
  const int64_t n = tokens.dim(0), c = tokens.dim(2);
  return be.batched_transpose(tokens).reshape(Shape{n, c, height, width});
}

// ---- ResnetBlock2D ----

ResnetBlock2D::ResnetBlock2D(ParamLoader p, int64_t in, int64_t out, int64_t temb_channels, int groups, float eps,
                             float output_scale)
    : groups_(groups), output_scale_(output_scale) {
  norm1_ = load_norm(p, "norm1", in, eps);
  conv1_ = load_conv(p, "conv1", in, out, 3);
  if (temb_channels > 0) {
    time_proj_ = load_linear(p, "time_emb_proj", temb_channels, out);
    has_time_ = true;
  }
  norm2_ = load_norm(p, "norm2", out, eps);
  conv2_ = load_conv(p, "conv2", out, out, 3);
  if (in != out) {
    shortcut_ = load_conv(p, "conv_shortcut", in, out, 1);
    has_shortcut_ = true;
  }
}

Tensor ResnetBlock2D::forward(Backend& be, const Tensor& x, const Tensor* temb_silu) {
  Tensor h = be.conv2d(x, group_norm_silu(norm1_, groups_), conv1_);
  if (has_time_) {
    OTTER_CHECK(temb_silu != nullptr, "ResnetBlock2D with a time projection called without a time embedding");
    const Tensor t = linear_per_distinct_row(be, *temb_silu, time_proj_);  // [1 or B, out]
    OTTER_CHECK(t.dim(0) == 1 || t.dim(0) == h.dim(0), "time embedding has ", t.dim(0), " rows for a batch of ",
                h.dim(0));
    be.add_inplace(h, t.reshape(Shape{t.dim(0), t.dim(1), 1, 1}));  // broadcast over H, W (and batch if 1 row)
  }
  // The skip connection is added as conv2's result is written.
  Tensor out = be.conv2d(h, group_norm_silu(norm2_, groups_), conv2_, has_shortcut_ ? be.conv2d(x, shortcut_) : x);
  if (output_scale_ != 1.0f) out = be.scale(out, 1.0f / output_scale_);
  return out;
}

Tensor linear_per_distinct_row(Backend& be, const Tensor& x_in, LinearWeights& w) {
  if (x_in.dim(0) == 1) return be.linear(x_in, w);
  const Tensor x = x_in.contiguous();
  const int64_t B = x.dim(0);
  const size_t row_bytes = x.nbytes() / static_cast<size_t>(B);
  const auto* bytes = static_cast<const unsigned char*>(x.raw());
  std::vector<Tensor> rows;
  rows.reserve(static_cast<size_t>(B));
  for (int64_t r = 0; r < B; ++r) {
    if (r > 0 && std::memcmp(bytes + r * row_bytes, bytes + (r - 1) * row_bytes, row_bytes) == 0) {
      rows.push_back(rows.back());
      continue;
    }
    rows.push_back(be.linear(x.slice(0, r, r + 1), w));
  }
  return be.concat(rows, 0);
}

// ---- Downsample2D / Upsample2D ----

Downsample2D::Downsample2D(ParamLoader p, int64_t channels, int padding) {
  conv_ = load_conv(p, "conv", channels, channels, 3, /*stride=*/2);
  if (padding > 0) {
    conv_.pad_top = conv_.pad_bottom = conv_.pad_left = conv_.pad_right = padding;
  } else {  // diffusers: F.pad(x, (0, 1, 0, 1)) then an unpadded conv
    conv_.pad_top = conv_.pad_left = 0;
    conv_.pad_bottom = conv_.pad_right = 1;
  }
}

Upsample2D::Upsample2D(ParamLoader p, int64_t channels) { conv_ = load_conv(p, "conv", channels, channels, 3); }

// ---- MultiHeadAttention ----

MultiHeadAttention::MultiHeadAttention(ParamLoader p, int64_t query_dim, int64_t context_dim, int heads)
    : heads_(heads) {
  OTTER_CHECK(heads > 0 && query_dim % heads == 0, p.prefix(), ": ", query_dim, " channels do not split into ", heads,
              " heads");
  scale_ = 1.0f / std::sqrt(static_cast<float>(query_dim / heads));
  to_q_ = load_linear(p, "to_q", query_dim, query_dim, /*bias=*/false);
  to_k_ = load_linear(p, "to_k", context_dim, query_dim, /*bias=*/false);
  to_v_ = load_linear(p, "to_v", context_dim, query_dim, /*bias=*/false);
  to_out_ = load_linear(p, "to_out.0", query_dim, query_dim);
}

Tensor MultiHeadAttention::forward(Backend& be, const Tensor& x, const Tensor* context, const Tensor* residual,
                                  const BlockPerturbations* perturbed) {
  const Tensor& ctx = context ? *context : x;
  OTTER_CHECK(ctx.dim(0) == x.dim(0), "attention: context batch ", ctx.dim(0), " does not match the input batch ",
              x.dim(0), " (", ctx.describe(), " vs ", x.describe(), ")");
  Tensor q = be.linear(x, to_q_);
  const Tensor k = be.linear(ctx, to_k_);
  const Tensor v = be.linear(ctx, to_v_);
  // PAG's rows (identity attention), in row order; SEG's rows get their queries blurred first.
  std::vector<std::pair<int64_t, int64_t>> identity;
  if (perturbed)
    for (const RowPerturbation* p : *perturbed) {
      OTTER_CHECK(!context, "attention: PAG's and SEG's perturbations apply to self-attention only");
      if (p->kind == BlockPerturbation::IdentitySelfAttention) identity.emplace_back(p->row_begin, p->row_end);
      if (p->kind == BlockPerturbation::BlurredQueries) {
        q = q.contiguous();
        blur_query_rows(q, p->row_begin, p->row_end, p->blur_sigma, p->blur_threshold_inf);
      }
    }
  Tensor attended;
  if (identity.empty()) {
    attended = be.attention(q, k, v, heads_, scale_);
  } else {
    // The identity rows' attention output is their value projection; the rows between them attend
    // as usual, run by run.
    std::sort(identity.begin(), identity.end());
    attended = Tensor::empty(v.shape(), DType::F32);
    const auto attend_rows = [&](int64_t a, int64_t b) {
      if (a < b)
        attended.slice(0, a, b).copy_from(
            be.attention(q.slice(0, a, b), k.slice(0, a, b), v.slice(0, a, b), heads_, scale_));
    };
    int64_t row = 0;
    for (const auto& [r0, r1] : identity) {
      attend_rows(row, r0);
      attended.slice(0, r0, r1).copy_from(v.slice(0, r0, r1));
      row = r1;
    }
    attend_rows(row, x.dim(0));
  }
  return residual ? be.linear(attended, to_out_, *residual) : be.linear(attended, to_out_);
}

// ---- SpatialSelfAttention ----

SpatialSelfAttention::SpatialSelfAttention(ParamLoader p, int64_t channels, int groups, float eps)
    : groups_(groups), scale_(1.0f / std::sqrt(static_cast<float>(channels))) {
  norm_ = load_norm(p, "group_norm", channels, eps);
  const bool legacy = !p.has("to_q.weight") && p.has("query.weight");
  q_ = load_linear(p, legacy ? "query" : "to_q", channels, channels);
  k_ = load_linear(p, legacy ? "key" : "to_k", channels, channels);
  v_ = load_linear(p, legacy ? "value" : "to_v", channels, channels);
  out_ = load_linear(p, legacy ? "proj_attn" : "to_out.0", channels, channels);
}

Tensor SpatialSelfAttention::forward(Backend& be, const Tensor& x) {
  const int64_t height = x.dim(2), width = x.dim(3);
  const Tensor tokens = to_tokens(be, be.group_norm(x, groups_, norm_));
  const Tensor q = be.linear(tokens, q_);
  const Tensor k = be.linear(tokens, k_);
  const Tensor v = be.linear(tokens, v_);
  Tensor out = to_nchw(be, be.linear(be.attention(q, k, v, /*heads=*/1, scale_), out_), height, width);
  be.add_inplace(out, x);  // `out` is owned here (fresh from the output projection)
  return out;
}

}  // namespace otter

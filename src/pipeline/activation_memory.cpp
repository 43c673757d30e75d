#include "pipeline/activation_memory.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "core/allocator.h"
#include "models/clip_text_encoder.h"
#include "models/unet_config.h"
#include "models/vae.h"

namespace otter {
namespace {

// Bytes of a size class as the allocator rounds them (a mapped block is its size class in whole
// 4 KB pages, so that is also what it can hold resident).
double size_class(double bytes) {
  if (bytes <= 0) return 0;
  return static_cast<double>(Allocator::size_class(static_cast<size_t>(std::ceil(bytes))));
}

// A block handed out by the replayed allocator; freed when the last handle goes, like a Tensor.
class Sim;
struct Block {
  Sim* sim;
  double bytes;
  ~Block();
};
using Buf = std::shared_ptr<Block>;

// The caching allocator's footprint: per size class the most blocks live at once since the last
// release, times the size; `peak` is the largest footprint seen. Scratch that lives outside the
// allocator (grow-only per-thread vectors) is tracked as its high-water mark per slot.
class Sim {
 public:
  Buf alloc(double bytes) {
    const double c = size_class(bytes);
    if (c <= 0) return nullptr;
    Count& n = counts_[c];
    if (++n.live > n.high) {
      n.high = n.live;
      held_ += c;
      peak_ = std::max(peak_, held_ + scratch_held());
    }
    return Buf(new Block{this, c});
  }
  void freed(double c) { --counts_[c].live; }
  // Backend::release_cached_memory(): cached blocks and the 16-bit kernels' scratch go back.
  void release_cache() {
    held_ = 0;
    for (auto& [c, n] : counts_) {
      n.high = n.live;
      held_ += c * n.live;
    }
    scratch_.clear();
  }
  void scratch(int slot, double bytes) {
    double& s = scratch_[slot];
    if (bytes > s) {
      s = bytes;
      scratch_peak_ = std::max(scratch_peak_, scratch_held());
      peak_ = std::max(peak_, held_ + scratch_held());
    }
  }
  ActivationBytes result() const {
    // The scratch is reported apart for the record; the peak already counts both together.
    return {peak_ - std::min(scratch_peak_, peak_), std::min(scratch_peak_, peak_)};
  }

 private:
  struct Count {
    int64_t live = 0, high = 0;
  };
  double scratch_held() const {
    double s = 0;
    for (const auto& [slot, bytes] : scratch_) s += bytes;
    return s;
  }
  std::map<double, Count> counts_;
  std::map<int, double> scratch_;
  double held_ = 0, peak_ = 0, scratch_peak_ = 0;
};

Block::~Block() { sim->freed(bytes); }

// The backend ops, each allocating what its CPU implementation allocates. Activations are f32.
class Ops {
 public:
  Ops(Sim& sim, Precision p, int threads)
      : s_(sim),
        p_(p),
        half_(cpu_uses_16bit_kernels(p)),
        half_f32_(cpu_16bit_kernels_read_f32(p)),
        threads_(std::max(1, threads)) {}

  static double f32(double elements) { return 4.0 * elements; }

  // conv2d on n images of [cin, pixels_in] -> [cout, pixels_out]; `norm` = a fused GroupNorm(+SiLU)
  // input transform, `up` = nearest 2x upsampling (pixels_out = 4 pixels_in).
  Buf conv(double n, double cin, double pixels_in, double cout, double pixels_out, bool norm, bool up) {
    if (half_) {  // the 16-bit kernels: an NHWC copy of the input in scratch, transform fused
      s_.scratch(1, (half_f32_ ? 4.0 : 2.0) * n * pixels_in * (std::ceil(cin / 2) * 2));
      return s_.alloc(f32(n * cout * pixels_out));
    }
    // oneDNN (f32, or bf16 without AVX-512 BF16): the transform runs as ops, then oneDNN reorders
    // in and out of its blocked layout.
    Buf normed = norm ? s_.alloc(f32(n * cin * pixels_in)) : nullptr;
    Buf upsampled = up ? s_.alloc(f32(n * cin * pixels_out)) : nullptr;
    const double src_pixels = up ? pixels_out : pixels_in, element = p_ == Precision::BF16 ? 2.0 : 4.0;
    Buf src = s_.alloc(element * n * cin * src_pixels);
    Buf y = s_.alloc(f32(n * cout * pixels_out));
    Buf dst = s_.alloc(f32(n * cout * pixels_out));
    return y;
  }

  // linear on m rows of k -> n.
  Buf linear(double m, double k, double n) {
    if (half_ && !half_f32_) s_.scratch(0, 2.0 * m * k);  // f32 rows are read where they are
    Buf x16 = !half_ && p_ == Precision::BF16 ? s_.alloc(2.0 * m * k) : nullptr;
    return s_.alloc(f32(m * n));
  }

  // geglu(linear) on m rows of k -> n, n/2 out: the 16-bit kernels write the gated half only
  // (half_linear_geglu, when n is whole 64-column panels: kHalfCols in half_gemm.h); otherwise the
  // projection lives until the gate is out.
  Buf linear_geglu(double m, double k, double n) {
    if (half_ && std::fmod(n, 64.0) == 0) {
      if (!half_f32_) s_.scratch(0, 2.0 * m * k);
      return s_.alloc(f32(m * n / 2));
    }
    Buf projection = linear(m, k, n);
    return s_.alloc(f32(m * n / 2));
  }

  Buf same(double elements) { return s_.alloc(f32(elements)); }  // norms, transposes, concat, ...

  // attention of b·nq queries over nk keys, `dim` channels in all heads.
  Buf attention(double b, double nq, double nk, double dim, double heads) {
    const double head = dim / heads;
    Buf scratch = s_.alloc(f32(threads_ * (2 * head * 64 + 128 * 64 + 2 * 64)));
    Buf k16, v_flat, v16, scratch16;
    if (half_ && !half_f32_ && nk >= 128) {  // 16-bit products: keys and values converted once per call
      k16 = s_.alloc(2.0 * b * nk * dim);
      v_flat = s_.alloc(2.0 * b * nk * dim);
      v16 = s_.alloc(2.0 * b * heads * std::ceil(nk / 2) * 2 * head);
      scratch16 = s_.alloc(2.0 * threads_ * (head * 64 + 128 * 64));
    }
    return s_.alloc(f32(b * nq * dim));
  }

 private:
  Sim& s_;
  Precision p_;
  bool half_;      // the backend's 16-bit kernels run this precision
  bool half_f32_;  // ...reading f32 activations (f16 weights on AVX2), attention in f32
  int threads_;
};

// ResnetBlock2D::forward (blocks.cpp): conv1(norm1(x)), conv2(norm2(h)) + (shortcut(x) or x).
Buf resnet(Ops& op, const Buf& x, double n, double cin, double cout, double pixels) {
  Buf h = op.conv(n, cin, pixels, cout, pixels, true, false);
  Buf shortcut = cin != cout ? op.conv(n, cin, pixels, cout, pixels, false, false) : nullptr;
  return op.conv(n, cout, pixels, cout, pixels, true, false);
}

// MultiHeadAttention::forward: q, k, v, attention, output projection (+ residual in the write-out).
Buf multi_head_attention(Ops& op, double n, double tokens, double dim, double context_tokens, double context_dim,
                         double heads) {
  Buf q = op.linear(n * tokens, dim, dim);
  Buf k = op.linear(n * context_tokens, context_dim, dim);
  Buf v = op.linear(n * context_tokens, context_dim, dim);
  Buf attended = op.attention(n, tokens, context_tokens, dim, heads);
  return op.linear(n * tokens, dim, dim);
}

// Transformer2D::forward (transformer2d.cpp). A statement's temporaries live to its end, so e.g.
// the feed-forward holds layer_norm, the gated projection (4C; unfused, also the 8C one before it)
// and its output at once.
Buf transformer(Ops& op, const Buf& x, double n, double c, double pixels, double heads, int layers,
                double context_tokens, double context_dim) {
  Buf tokens;
  {
    Buf normed = op.same(n * c * pixels);
    Buf transposed = op.same(n * c * pixels);
    tokens = op.linear(n * pixels, c, c);
  }
  for (int l = 0; l < layers; ++l) {
    {
      Buf ln = op.same(n * c * pixels);
      tokens = multi_head_attention(op, n, pixels, c, pixels, c, heads);
    }
    {
      Buf ln = op.same(n * c * pixels);
      tokens = multi_head_attention(op, n, pixels, c, context_tokens, context_dim, heads);
    }
    {
      Buf ln = op.same(n * c * pixels);
      Buf gated = op.linear_geglu(n * pixels, c, 8 * c);
      tokens = op.linear(n * pixels, 4 * c, c);
    }
  }
  Buf projected = op.linear(n * pixels, c, c);
  return op.same(n * c * pixels);  // to_nchw; the input is added in place
}

// SpatialSelfAttention::forward (the VAE's one-head attention).
Buf spatial_attention(Ops& op, double n, double c, double pixels) {
  Buf normed = op.same(n * c * pixels);
  Buf tokens = op.same(n * c * pixels);
  Buf q = op.linear(n * pixels, c, c), k = op.linear(n * pixels, c, c), v = op.linear(n * pixels, c, c);
  Buf attended = op.attention(n, pixels, pixels, c, 1);
  Buf projected = op.linear(n * pixels, c, c);
  return op.same(n * c * pixels);
}

}  // namespace

ActivationBytes unet_activation_bytes(const nlohmann::json& unet_config, int64_t rows, int64_t h, int64_t w,
                                      int64_t tokens, Precision precision, int threads) {
  const UNetConfig c = UNetConfig::from_json(unet_config);
  Sim sim;
  Ops op(sim, precision, threads);
  const double n = static_cast<double>(rows), ctx_tokens = static_cast<double>(tokens);
  const size_t blocks = c.num_blocks();
  double pixels = static_cast<double>(h * w);
  const auto ch = [&](size_t i) { return static_cast<double>(c.block_out_channels[i]); };

  Buf sample = op.same(n * c.in_channels * pixels);
  Buf x = op.same(n * c.in_channels * pixels);  // the sampler's scaled copy of the latents
  Buf hb = op.conv(n, c.in_channels, pixels, ch(0), pixels, false, false);
  std::vector<std::pair<Buf, double>> skips{{hb, ch(0)}};
  double channels = ch(0);
  for (size_t i = 0; i < blocks; ++i) {
    const bool attention = c.down_blocks[i] == UNetDownBlockType::CrossAttnDown;
    for (int j = 0; j < c.layers_per_block[i]; ++j) {
      hb = resnet(op, hb, n, channels, ch(i), pixels);
      channels = ch(i);
      if (attention)
        hb = transformer(op, hb, n, channels, pixels, c.attention_heads[i], c.transformer_layers[i], ctx_tokens,
                         c.cross_attention_dim[i]);
      skips.emplace_back(hb, channels);
    }
    if (i + 1 < blocks) {
      hb = op.conv(n, channels, pixels, channels, pixels / 4, false, false);
      pixels /= 4;
      skips.emplace_back(hb, channels);
    }
  }
  if (c.has_mid_block) {
    const size_t last = blocks - 1;
    hb = resnet(op, hb, n, channels, channels, pixels);
    hb = transformer(op, hb, n, channels, pixels, c.mid_heads(), c.transformer_layers[last], ctx_tokens,
                     c.cross_attention_dim[last]);
    hb = resnet(op, hb, n, channels, channels, pixels);
  }
  for (size_t i = 0; i < blocks; ++i) {
    const size_t down = blocks - 1 - i;
    const bool attention = c.up_blocks[i] == UNetUpBlockType::CrossAttnUp;
    for (int j = 0; j <= c.layers_per_block[down]; ++j) {
      // `pair` holds the old h and the skip for the whole iteration (unet.cpp).
      const auto [skip, skip_channels] = skips.back();
      skips.pop_back();
      const Buf old_h = hb;
      {
        Buf joined = op.same(n * (channels + skip_channels) * pixels);
        hb = resnet(op, joined, n, channels + skip_channels, ch(down), pixels);
      }
      channels = ch(down);
      if (attention)
        hb = transformer(op, hb, n, channels, pixels, c.up_heads(i), c.up_transformer_layers[i], ctx_tokens,
                         c.cross_attention_dim[down]);
    }
    if (i + 1 < blocks) {
      hb = op.conv(n, channels, pixels, channels, pixels * 4, false, true);
      pixels *= 4;
    }
  }
  Buf out = op.conv(n, channels, pixels, c.out_channels, pixels, true, false);
  return sim.result();
}

ActivationBytes vae_decode_activation_bytes(const nlohmann::json& vae_config, int64_t images, int64_t h, int64_t w,
                                            Precision precision, int threads) {
  const VaeConfig c = VaeConfig::from_json(vae_config);
  Sim sim;
  Ops op(sim, precision, threads);
  const double n = static_cast<double>(images);
  double pixels = static_cast<double>(h * w);
  const size_t blocks = c.block_out_channels.size();
  const auto ch = [&](size_t i) { return static_cast<double>(c.block_out_channels[i]); };

  Buf z = op.same(n * c.latent_channels * pixels);
  if (c.use_post_quant_conv) z = op.conv(n, c.latent_channels, pixels, c.latent_channels, pixels, false, false);
  double channels = ch(blocks - 1);
  Buf hb = op.conv(n, c.latent_channels, pixels, channels, pixels, false, false);
  z.reset();
  hb = resnet(op, hb, n, channels, channels, pixels);
  if (c.mid_block_add_attention) hb = spatial_attention(op, n, channels, pixels);
  hb = resnet(op, hb, n, channels, channels, pixels);
  for (size_t i = 0; i < blocks; ++i) {
    const double out = ch(blocks - 1 - i);
    for (int j = 0; j <= c.layers_per_block; ++j) {
      hb = resnet(op, hb, n, channels, out, pixels);
      channels = out;
    }
    if (i + 1 < blocks) {
      hb = op.conv(n, channels, pixels, channels, pixels * 4, false, true);
      pixels *= 4;
    }
    sim.release_cache();
  }
  Buf image = op.conv(n, channels, pixels, c.out_channels, pixels, true, false);
  return sim.result();
}

ActivationBytes vae_encode_activation_bytes(const nlohmann::json& vae_config, int64_t images, int64_t height,
                                            int64_t width, Precision precision, int threads) {
  const VaeConfig c = VaeConfig::from_json(vae_config);
  Sim sim;
  Ops op(sim, precision, threads);
  const double n = static_cast<double>(images);
  double pixels = static_cast<double>(height * width);
  const size_t blocks = c.block_out_channels.size();
  const auto ch = [&](size_t i) { return static_cast<double>(c.block_out_channels[i]); };
  // The mirror of the decoder (models/vae.cpp VaeEncoder::forward): full resolution first.
  Buf image = op.same(n * c.in_channels * pixels);
  double channels = ch(0);
  Buf hb = op.conv(n, c.in_channels, pixels, channels, pixels, false, false);
  image.reset();
  for (size_t i = 0; i < blocks; ++i) {
    for (int j = 0; j < c.layers_per_block; ++j) {
      hb = resnet(op, hb, n, channels, ch(i), pixels);
      channels = ch(i);
    }
    if (i + 1 < blocks) {
      Buf padded = op.same(n * channels * pixels);  // one row and column of zeros right and bottom
      hb = op.conv(n, channels, pixels, channels, pixels / 4, false, false);
      pixels /= 4;
    }
    sim.release_cache();
  }
  hb = resnet(op, hb, n, channels, channels, pixels);
  if (c.mid_block_add_attention) hb = spatial_attention(op, n, channels, pixels);
  hb = resnet(op, hb, n, channels, channels, pixels);
  Buf moments = op.conv(n, channels, pixels, 2.0 * c.latent_channels, pixels, true, false);
  return sim.result();
}

ActivationBytes text_encoder_activation_bytes(const nlohmann::json& text_encoder_config, int64_t rows,
                                              Precision precision, int threads) {
  const ClipTextConfig c = ClipTextConfig::from_json(text_encoder_config);
  Sim sim;
  Ops op(sim, precision, threads);
  const double n = static_cast<double>(rows), t = c.max_position_embeddings, d = c.hidden_size;
  Buf x = op.same(n * t * d);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    {
      Buf ln = op.same(n * t * d);
      Buf q = op.linear(n * t, d, d), k = op.linear(n * t, d, d), v = op.linear(n * t, d, d);
      Buf attended = op.attention(n, t, t, d, c.num_attention_heads);
      x = op.linear(n * t, d, d);
    }
    Buf ln = op.same(n * t * d);
    Buf fc1 = op.linear(n * t, d, c.intermediate_size);
    Buf act = op.same(n * t * c.intermediate_size);
    x = op.linear(n * t, c.intermediate_size, d);
  }
  Buf final_norm = op.same(n * t * d);
  return sim.result();
}

}  // namespace otter

// GCC 12 warns about its own AVX-512 intrinsic headers (the known false positive on the shuffles
// transpose16.h uses, as in half_gemm.cpp); the intrinsics are used as documented.
#if defined(__GNUC__) && !defined(__clang__)  // GCC's warning names; clang has no such false positive
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "backend/cpu/half_ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <type_traits>
#include <vector>

#include "backend/cpu/dnnl_ops.h"
#include "backend/cpu/half_gemm.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/transpose16.h"
#include "backend/cpu/vector_math.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"

namespace otter::cpu {
namespace {

// The residual as contiguous f32 of the output's shape (undefined if none).
Tensor residual_f32(const Tensor* residual, const Shape& output, const char* op) {
  if (residual == nullptr) return Tensor();
  check_residual(*residual, output, op);
  return residual->to(DType::F32).contiguous();
}

// The f32 fallback's result plus the residual (if any).
Tensor with_residual(Tensor y, const Tensor& residual) {
  if (residual.defined()) add_inplace(y, residual);
  return y;
}

// A bias as the f32 values the write-outs add (empty if the layer has none).
std::vector<float> bias_f32(const Tensor& bias) {
  if (!bias.defined()) return {};
  const Tensor b = bias.to(DType::F32);
  return std::vector<float>(b.f32(), b.f32() + b.numel());
}

struct PreparedHalfLinear {
  HalfPackedWeights w;
  std::vector<float> bias;
  bool use_f32 = false;  // an output overflowed f16 once: this layer runs in f32 from then on
  std::once_flag packed;
  // The same layer packed for a fused GEGLU (half_linear_geglu), when it is used that way.
  HalfPackedWeights geglu_w;
  std::vector<float> geglu_bias;
  std::once_flag geglu_packed;
};

// A linear layer's weight is [N, K] and its input ends in K features.
void check_linear(const Tensor& x, const LinearWeights& w) {
  OTTER_CHECK(w.weight.rank() == 2, "linear weight must be [out, in], got ", w.weight.describe());
  OTTER_CHECK(x.rank() >= 1 && x.dim(-1) == w.weight.dim(1), "linear: input ", x.describe(), " does not end in ",
              w.weight.dim(1), " features (weight ", w.weight.describe(), ")");
}

PreparedHalfLinear& prepared_linear(LinearWeights& w) {
  std::shared_ptr<void>& slot = prepared_slot(w).half;
  if (!slot) slot = std::make_shared<PreparedHalfLinear>();
  return *static_cast<PreparedHalfLinear*>(slot.get());
}

struct PreparedHalfConv {
  HalfPackedWeights w;  // [O][taps · Cp], Cp = C rounded up to even
  std::vector<float> bias;
  bool use_f32 = false;
  std::once_flag packed;
};

// A layer's weights are packed for one format; a second backend of another format would need its
// own copy of the model (StableDiffusion::load builds one per backend).
void check_format(const HalfPackedWeights& w, HalfFormat f) {
  OTTER_CHECK(w.panels.empty() || w.format == f, "these weights were packed for ", half_format_name(w.format),
              " and are now used in ", half_format_name(f), ": load the model once per precision");
}

}  // namespace

bool half_ops_available(HalfFormat f) { return half_gemm_available(f); }

Tensor half_linear(const Tensor& x_in, LinearWeights& w, HalfFormat format, const Tensor* residual_in) {
  check_linear(x_in, w);
  const int64_t N = w.weight.dim(0), K = w.weight.dim(1);
  PreparedHalfLinear& prep = prepared_linear(w);
  std::vector<int64_t> out_shape = x_in.shape().to_vector();
  out_shape.back() = N;
  const Tensor residual = residual_f32(residual_in, Shape(out_shape), "linear");
  if (prep.use_f32) return with_residual(dnnl_linear(x_in, w, Precision::F32), residual);
  std::call_once(prep.packed, [&] {
    prep.w = pack_half_weights(w.weight, format);
    prep.bias = bias_f32(w.bias);
    w.weight.release_file_pages();
  });
  check_format(prep.w, format);
  const Tensor x = x_in.to(DType::F32).contiguous();
  const int64_t M = x.numel() / K;
  Tensor y = Tensor::empty(Shape(out_shape), DType::F32);
  if (!gemm_half(x.f32(), M, prep.w, prep.bias.empty() ? nullptr : prep.bias.data(), y.f32(),
                residual.defined() ? residual.f32() : nullptr)) {
    prep.use_f32 = true;
    return with_residual(dnnl_linear(x_in, w, Precision::F32), residual);
  }
  return y;
}

Tensor half_linear_geglu(const Tensor& x_in, LinearWeights& w, HalfFormat format) {
  check_linear(x_in, w);
  const int64_t N = w.weight.dim(0), K = w.weight.dim(1);
  OTTER_CHECK(N % 2 == 0, "geglu needs an even number of outputs, got weight ", w.weight.describe());
  if (N % kHalfCols != 0) return geglu(half_linear(x_in, w, format));
  PreparedHalfLinear& prep = prepared_linear(w);
  if (prep.use_f32) return geglu(dnnl_linear(x_in, w, Precision::F32));
  std::call_once(prep.geglu_packed, [&] {
    prep.geglu_w = pack_half_weights_geglu(w.weight, bias_f32(w.bias), format, prep.geglu_bias);
    w.weight.release_file_pages();
  });
  check_format(prep.geglu_w, format);
  const Tensor x = x_in.to(DType::F32).contiguous();
  const int64_t M = x.numel() / K;
  std::vector<int64_t> out_shape = x_in.shape().to_vector();
  out_shape.back() = N / 2;
  Tensor y = Tensor::empty(Shape(out_shape), DType::F32);
  if (!gemm_half(x.f32(), M, prep.geglu_w, prep.geglu_bias.empty() ? nullptr : prep.geglu_bias.data(), y.f32())) {
    prep.use_f32 = true;
    return geglu(dnnl_linear(x_in, w, Precision::F32));
  }
  return y;
}

namespace {

// Shapes of one convolution call. SH, SW: the source, as the 16-bit copy holds it; H, W: the
// convolution's input, the source upsampled 2x when up_shift is 1. cp = C rounded up to even (the
// kernels read k in pairs).
struct ConvGeometry {
  int64_t N, C, SH, SW, H, W, O, kh, kw, OH, OW, stride, pad_top, pad_left, cp;
  int up_shift;
  HalfFormat format;
};

// y = fma(x, a, b), then SiLU if asked: group_norm's arithmetic for one channel's row, in a
// contiguous loop the compiler vectorises (with the stride-Cp stores it stayed scalar: 2x slower
// VAE decode).
OTTER_KERNEL void affine_row(const float* x, float* y, int64_t n, float a, float b, bool silu) {
  if (silu) {
    for (int64_t i = 0; i < n; ++i) y[i] = fast_silu(std::fma(x[i], a, b));
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = std::fma(x[i], a, b);
  }
}

constexpr int64_t kChannelBlock = 16;  // channels interleaved per pass (16 floats: one cache line)

// row[w·stride + j] = block[j·sw + w] for j < nc: nc channel runs into pixel-major order.
OTTER_KERNEL void interleave_channels(const float* block, int64_t sw, int64_t nc, float* row, int64_t stride) {
  for (int64_t w = 0; w < sw; ++w)
    for (int64_t j = 0; j < nc; ++j) row[w * stride + j] = block[j * sw + w];
}

// interleave_channels for a full block of 16 channels, 16 pixels at a time through registers
// (transpose16x16); the pixels past the last multiple of 16 go one by one.
__attribute__((target("avx512f"))) void interleave_16_channels(const float* block, int64_t sw, float* row,
                                                              int64_t stride) {
  int64_t w0 = 0;
  for (; w0 + 16 <= sw; w0 += 16) {
    __m512 in[16], out[16];
    for (int j = 0; j < 16; ++j) in[j] = _mm512_loadu_ps(block + j * sw + w0);
    transpose16x16(in, out);
    for (int k = 0; k < 16; ++k) _mm512_storeu_ps(row + (w0 + k) * stride, out[k]);
  }
  for (int64_t w = w0; w < sw; ++w)
    for (int64_t j = 0; j < 16; ++j) row[w * stride + j] = block[j * sw + w];
}

// The source as NHWC with Cp channels into xh (16-bit; f32 for F16Weights), through the
// transform's group norm (+ SiLU) when it has one: the same float values group_norm would
// produce, rounded to 16 bits once where xh is 16-bit.
template <class A>
void convert_input(const Tensor& x, const ConvInputTransform* t, const ConvGeometry& g, A* xh) {
  constexpr bool kF32 = std::is_same_v<A, float>;
  const int64_t SH = g.SH, SW = g.SW;
  const bool norm = t != nullptr && t->group_norm != nullptr, silu = norm && t->silu;
  const Tensor affine = norm ? group_norm_affine(x, t->groups, *t->group_norm) : Tensor();
  const float* scale = norm ? affine.f32() : nullptr;  // [N·C], then the shifts
  const float* shift = norm ? scale + g.N * g.C : nullptr;
  const bool avx512 = cpu_features().avx512f;
#pragma omp parallel for collapse(2)
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t h = 0; h < SH; ++h) {
      // One image row as [W][Cp] f32 before the conversion, built kChannelBlock channels at a
      // time: their (normalised) runs go to a small [block][W] buffer first, then each pixel's
      // channels are written together (one cache line per pixel and block; written channel by
      // channel, every store of the row landed a Cp stride away: 17% of a VAE decode). Per thread
      // and grow-only, so the denoising loop does not allocate.
      // f32 rows are built where they go.
      thread_local std::vector<float> row_buffer;
      if (!kF32) row_buffer.resize(static_cast<size_t>(SW * g.cp));
      float* row = kF32 ? reinterpret_cast<float*>(xh) + ((n * SH + h) * SW) * g.cp : row_buffer.data();
      if (g.cp != g.C)  // the padding channel
        for (int64_t ww = 0; ww < SW; ++ww) row[ww * g.cp + g.C] = 0.0f;
      thread_local std::vector<float> block;
      block.resize(static_cast<size_t>(kChannelBlock * SW));
      for (int64_t c0 = 0; c0 < g.C; c0 += kChannelBlock) {
        const int64_t nc = std::min<int64_t>(kChannelBlock, g.C - c0);
        for (int64_t j = 0; j < nc; ++j) {
          const int64_t c = c0 + j;
          const float* src = x.f32() + ((n * g.C + c) * SH + h) * SW;
          // A row reads C short runs a plane apart, too many streams for the hardware prefetcher
          // (the loads waited on memory: 60% of this loop's time); fetch the next row's run now.
          if (h + 1 < SH)
            for (int64_t off = 0; off < SW; off += 16) __builtin_prefetch(src + SW + off);
          float* dst = block.data() + j * SW;
          if (norm)
            affine_row(src, dst, SW, scale[n * g.C + c], shift[n * g.C + c], silu);
          else
            std::copy(src, src + SW, dst);
        }
        if (nc == kChannelBlock && avx512)
          interleave_16_channels(block.data(), SW, row + c0, g.cp);
        else
          interleave_channels(block.data(), SW, nc, row + c0, g.cp);
      }
      if constexpr (!kF32)
        f32_to_half_n(g.format, row, xh + ((n * SH + h) * SW) * g.cp, static_cast<size_t>(SW * g.cp));
    }
}

constexpr int64_t kMaxPixels = 16 * kHalfRows;  // output pixels per group (16 tiles)

// buf[c][q] = column c of pixel q's bf16 tile row (+ bias[c]) for q < count and every c < cols,
// 16 pixels x 16 columns at a time through registers (transpose16x16): a bf16 tile row holds its
// 64 column sums contiguously. Rows of buf past cols (up to 64) and columns past count (up to the
// next multiple of 16) are written too, and not read.
__attribute__((target("avx512f"))) void bf16_rows_to_channels(const float (*acc)[kHalfRows * kMaxHalfLanes],
                                                             int64_t count, const float* bias, int64_t cols,
                                                             float (*buf)[kMaxPixels]) {
  for (int64_t q0 = 0; q0 < count; q0 += 16)
    for (int64_t c0 = 0; c0 < cols; c0 += 16) {
      __m512 in[16], out[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t q = std::min(q0 + i, count - 1);  // past count: the last pixel again
        in[i] = _mm512_loadu_ps(acc[q / kHalfRows] + (q % kHalfRows) * kBF16Lanes + c0);
      }
      transpose16x16(in, out);
      for (int j = 0; j < 16; ++j) {
        const float b = bias && c0 + j < cols ? bias[c0 + j] : 0.0f;
        _mm512_store_ps(&buf[c0 + j][q0], _mm512_add_ps(out[j], _mm512_set1_ps(b)));
      }
    }
}

// Writes one group's results — consecutive output pixels [p0, p1) x channels [o0, o0 + cols) —
// into NCHW y: each tile row's columns (+ bias) go into a channel-major buffer, then
// every channel's pixels go out as contiguous runs (split where the group crosses an image), plus
// the residual's (NCHW like y) where there is one. Returns false if a sum is not finite (f16
// overflow).
bool conv_write_group(const float (*acc)[kHalfRows * kMaxHalfLanes], int64_t p0, int64_t p1, const float* bias,
                      const float* residual, const ConvGeometry& g, int64_t o0, int64_t cols, float* y) {
  alignas(64) float buf[kHalfCols][kMaxPixels];
  const int lanes_per_row = tile_lanes(g.format);
  const int64_t count = p1 - p0;
  if (g.format == HalfFormat::BF16) {
    bf16_rows_to_channels(acc, count, bias ? bias + o0 : nullptr, cols, buf);
  } else {  // f16 and F16Weights: a column is the sum of two lanes
    for (int64_t q = 0; q < count; ++q) {
      const float* lanes = acc[q / kHalfRows] + (q % kHalfRows) * lanes_per_row;
      for (int64_t c = 0; c < cols; ++c) buf[c][q] = tile_column(g.format, lanes, c) + (bias ? bias[o0 + c] : 0.0f);
    }
  }
  // Only f16 partial sums can overflow (bf16 sums in f32, as the f32 path does). One running sum
  // per column, NaN if any of its values is inf or NaN: a single sum over the group was one long
  // chain of dependent adds, most of this function's 11 % of a bf16 128->128 conv at 512x512
  // (perf); dropping it for bf16 made that conv 3 % faster.
  bool finite = true;
  if (g.format == HalfFormat::F16) {
    float poison[kHalfCols] = {};
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t q = 0; q < count; ++q) poison[c] += buf[c][q] * 0.0f;
    for (int64_t c = 0; c < cols; ++c) finite = finite && poison[c] == 0.0f;
  }
  const int64_t ohw = g.OH * g.OW;
  for (int64_t q = 0; q < count;) {
    const int64_t pixel = p0 + q, n = pixel / ohw, hw = pixel % ohw;
    const int64_t run = std::min(count - q, ohw - hw);
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t at = (n * g.O + o0 + c) * ohw + hw;
      if (residual) {
        for (int64_t i = 0; i < run; ++i) y[at + i] = buf[c][q + i] + residual[at + i];
      } else {
        std::copy(&buf[c][q], &buf[c][q] + run, y + at);
      }
    }
    q += run;
  }
  return finite;
}

template <class A>
bool conv_tiles(const Tensor& x, const ConvInputTransform* transform, const ConvGeometry& g,
                const PreparedHalfConv& prep, const Tensor& residual, Tensor& y);

}  // namespace

Tensor half_conv2d(const Tensor& x_in, Conv2dWeights& w, HalfFormat format, const ConvInputTransform* transform,
                   const Tensor* residual_in) {
  OTTER_CHECK(x_in.rank() == 4, "conv2d needs [N, C, H, W], got ", x_in.describe());
  OTTER_CHECK(w.weight.rank() == 4, "conv2d weight must be [O, I, kh, kw], got ", w.weight.describe());
  ConvGeometry g{};
  g.format = format;
  g.up_shift = transform != nullptr && transform->upsample_nearest2x ? 1 : 0;
  g.N = x_in.dim(0), g.C = x_in.dim(1), g.SH = x_in.dim(2), g.SW = x_in.dim(3);
  g.H = g.SH << g.up_shift, g.W = g.SW << g.up_shift;
  g.O = w.weight.dim(0), g.kh = w.weight.dim(2), g.kw = w.weight.dim(3);
  OTTER_CHECK(w.weight.dim(1) == g.C, "conv2d: input has ", g.C, " channels, weight expects ", w.weight.dim(1), " (",
              w.weight.describe(), ")");
  g.stride = w.stride, g.pad_top = w.pad_top, g.pad_left = w.pad_left;
  g.OH = (g.H + w.pad_top + w.pad_bottom - g.kh) / w.stride + 1;
  g.OW = (g.W + w.pad_left + w.pad_right - g.kw) / w.stride + 1;
  g.cp = (g.C + 1) / 2 * 2;
  const Tensor residual = residual_f32(residual_in, Shape{g.N, g.O, g.OH, g.OW}, "conv2d");
  // Runs the unfused ops, then oneDNN f32: the fallback when f16 overflows (bf16 cannot).
  auto in_f32 = [&] {
    const Tensor x = transform ? apply_conv_input_transform(x_in, *transform) : x_in;
    return with_residual(dnnl_conv2d(x, w, Precision::F32), residual);
  };

  std::shared_ptr<void>& slot = prepared_slot(w).half;
  if (!slot) slot = std::make_shared<PreparedHalfConv>();
  auto& prep = *static_cast<PreparedHalfConv*>(slot.get());
  if (prep.use_f32) return in_f32();
  std::call_once(prep.packed, [&] {
    prep.w = pack_half_conv_weights(w.weight, g.cp, format);
    prep.bias = bias_f32(w.bias);
    w.weight.release_file_pages();
  });
  check_format(prep.w, format);

  const Tensor x = x_in.to(DType::F32).contiguous();
  Tensor y = Tensor::empty(Shape{g.N, g.O, g.OH, g.OW}, DType::F32);
  const bool overflow = f32_activations(format) ? conv_tiles<float>(x, transform, g, prep, residual, y)
                                                : conv_tiles<uint16_t>(x, transform, g, prep, residual, y);
  if (overflow) {
    prep.use_f32 = true;
    return in_f32();
  }
  return y;
}

namespace {
// The implicit GEMM over the input as NHWC in the format's activation type A, with Cp channels,
// plus one row of zeros for the padding taps. Returns true if a sum overflowed (f16 only).
template <class A>
bool conv_tiles(const Tensor& x, const ConvInputTransform* transform, const ConvGeometry& g,
                const PreparedHalfConv& prep, const Tensor& residual, Tensor& y) {
  const HalfFormat format = g.format;
  const int64_t source_pixels = g.N * g.SH * g.SW;
  const size_t elements = static_cast<size_t>(source_pixels * g.cp + g.cp);
  A* const xh = reinterpret_cast<A*>(half_scratch(elements * sizeof(A) / sizeof(uint16_t), 1));
  A* zeros = xh + source_pixels * g.cp;
  std::fill(zeros, zeros + g.cp, A{0});
  convert_input(x, transform, g, xh);

  const int64_t pixels = g.N * g.OH * g.OW, tiles = (pixels + kHalfRows - 1) / kHalfRows;
  const int64_t panels = (g.O + kHalfCols - 1) / kHalfCols, K = prep.w.k_padded;
  const float* bias = prep.bias.empty() ? nullptr : prep.bias.data();
  // Tiles in groups: taps outer, the group's tiles inner, so one tap's slice of the weight panel
  // (Cp x 64 columns, 40 KB at Cp = 320) stays in L1 while the group uses it; tile by tile, the
  // whole panel (368 KB) streamed from L2 for every six pixels.
  constexpr int64_t kGroup = 16;
  const int64_t groups = (tiles + kGroup - 1) / kGroup;
  bool overflow = false;
  const int64_t chunk = tiles_chunk(panels * groups, omp_get_max_threads());
#pragma omp parallel for collapse(2) schedule(dynamic, chunk) reduction(|| : overflow)
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t gi = 0; gi < groups; ++gi) {
      alignas(64) float acc[kGroup][kHalfRows * kMaxHalfLanes];
      int64_t n_of[kGroup][kHalfRows], oh_of[kGroup][kHalfRows], ow_of[kGroup][kHalfRows];
      const int64_t t0 = gi * kGroup, t1 = std::min(tiles, t0 + kGroup);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ti = t - t0;
        for (int r = 0; r < kHalfRows; ++r) {
          // A last tile's missing rows repeat its last pixel (their sums are not written).
          const int64_t pixel = std::min(t * kHalfRows + r, pixels - 1);
          n_of[ti][r] = pixel / (g.OH * g.OW);
          oh_of[ti][r] = pixel / g.OW % g.OH;
          ow_of[ti][r] = pixel % g.OW;
        }
      }
      const uint16_t* panel = prep.w.panels.data() + p * K * kHalfCols;
      for (int64_t i = 0; i < g.kh; ++i)
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t tap = i * g.kw + j;
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t ti = t - t0;
            const A* row_ptrs[kHalfRows];
            for (int r = 0; r < kHalfRows; ++r) {
              const int64_t ih = oh_of[ti][r] * g.stride + i - g.pad_top, iw = ow_of[ti][r] * g.stride + j - g.pad_left;
              // An upsampled pixel reads its nearest source pixel: the 2x tensor never exists.
              row_ptrs[r] = ih < 0 || ih >= g.H || iw < 0 || iw >= g.W
                                ? zeros
                                : xh + ((n_of[ti][r] * g.SH + (ih >> g.up_shift)) * g.SW + (iw >> g.up_shift)) * g.cp;
            }
            // The tile's k range is this tap's Cp channels; the panel is indexed by absolute k.
            // The next tap's slice (or the next panel's first) into L2 meanwhile, split over the tiles.
            const uint16_t* slice = panel + tap * g.cp * kHalfCols;
            half_tile(format, row_ptrs, slice, 0, g.cp, acc[ti], tap > 0,
                      tile_prefetch_share(slice, g.cp * kHalfCols * 2, ti, t1 - t0), g.O - p * kHalfCols);
          }
        }
      const bool finite = conv_write_group(acc, t0 * kHalfRows, std::min(pixels, t1 * kHalfRows), bias,
                                           residual.defined() ? residual.f32() : nullptr, g, p * kHalfCols,
                                           std::min<int64_t>(kHalfCols, g.O - p * kHalfCols), y.f32());
      if (!finite) overflow = true;
    }
  return overflow;
}
}  // namespace

}  // namespace otter::cpu

// GCC 12 warns about its own AVX-512 intrinsic headers (the known false positive on the
// extract/convert helpers, as in attention_kernel.cpp); the intrinsics are used as documented.
#if defined(__GNUC__) && !defined(__clang__)  // GCC's warning names; clang has no such false positive
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "backend/cpu/half_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/kernels.h"
#include "core/allocator.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"

namespace otter::cpu {

// Six rows x four vectors, k taken in pairs: a row's two f16 values for k and k+1 are broadcast
// together as one 32-bit element (vpbroadcastd from memory is a pure load; broadcasting a single
// 16-bit value costs a shuffle uop on one of the two FMA ports, which held the kernel at half the
// FMA rate). The panel holds, for each pair, W[k] and W[k+1] of one column in adjacent lanes, so
// each accumulator lane sums every other k of one column; the pairs are added at write-out.
// 24 accumulators + 4 panel vectors + 1 broadcast fit the 32 registers.
__attribute__((target("avx512f,avx512bw,avx512fp16"))) void f16_tile(const uint16_t* const rows[kHalfRows],
                                                                      const uint16_t* panel, int64_t k_begin,
                                                                      int64_t k_end, float* acc_f32, bool accumulate,
                                                                      TilePrefetch prefetch) {
  constexpr int kVecs = kF16Lanes / 32;
  const uint16_t* r0 = rows[0];
  const uint16_t* r1 = rows[1];
  const uint16_t* r2 = rows[2];
  const uint16_t* r3 = rows[3];
  const uint16_t* r4 = rows[4];
  const uint16_t* r5 = rows[5];
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kF16Chunk) {
    const int64_t k1 = std::min<int64_t>(k_end, k0 + kF16Chunk);
    const bool add = accumulate || k0 != k_begin;
    __m512h acc[kHalfRows][kVecs];
    OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[r][c] =
        _mm512_setzero_ph();
    for (int64_t k = k0; k < k1; k += 2) {
      prefetch_line(prefetch, (k - k_begin) / 2);
      __m512h bv[kVecs];
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) bv[c] = _mm512_loadu_ph(panel + k * kHalfCols + 32 * c);
      const uint16_t* a[kHalfRows] = {r0 + k, r1 + k, r2 + k, r3 + k, r4 + k, r5 + k};
      OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) {
        int32_t pair;
        std::memcpy(&pair, a[r], sizeof(pair));
        const __m512h av = _mm512_castsi512_ph(_mm512_set1_epi32(pair));
        OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[r][c] = _mm512_fmadd_ph(av, bv[c], acc[r][c]);
      }
    }
    OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) {
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) {
        const __m512i bits = _mm512_castph_si512(acc[r][c]);
        const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(bits));
        const __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(bits, 1));
        float* dst = acc_f32 + r * kF16Lanes + c * 32;
        // The first chunk stores: zeroing the tile first (a rep stos) took a quarter of the time.
        _mm512_storeu_ps(dst, add ? _mm512_add_ps(_mm512_loadu_ps(dst), lo) : lo);
        _mm512_storeu_ps(dst + 16, add ? _mm512_add_ps(_mm512_loadu_ps(dst + 16), hi) : hi);
      }
    }
  }
  prefetch_rest(prefetch, (k_end - k_begin) / 2);
}

// The same tile on vdpbf16ps: each instruction multiplies a broadcast pair (k, k+1) of one row by
// sixteen columns' pairs and adds both products into the column's f32 lane, so the accumulators are
// the sums themselves (no chunks, no lane pairs). 24 accumulators + 4 panel vectors + 1 broadcast.
// kVecs < 4: only the panel's first kVecs x 16 columns (a layer with fewer outputs than a panel:
// the VAE's last convolution has 3, the UNet's 4, and computed all 64 columns at 34 GFLOP/s).
template <int kVecs>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_tile_vecs(const uint16_t* const rows[kHalfRows],
                                                                          const uint16_t* panel, int64_t k_begin,
                                                                          int64_t k_end, float* acc_f32,
                                                                          bool accumulate, TilePrefetch prefetch) {
  __m512 acc[kHalfRows][kVecs];
  OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[r][c] =
      accumulate ? _mm512_loadu_ps(acc_f32 + r * kBF16Lanes + 16 * c) : _mm512_setzero_ps();
  const uint16_t* r0 = rows[0];
  const uint16_t* r1 = rows[1];
  const uint16_t* r2 = rows[2];
  const uint16_t* r3 = rows[3];
  const uint16_t* r4 = rows[4];
  const uint16_t* r5 = rows[5];
  for (int64_t k = k_begin; k < k_end; k += 2) {
    prefetch_line(prefetch, (k - k_begin) / 2);
    __m512bh bv[kVecs];
    OTTER_UNROLL for (int c = 0; c < kVecs; ++c) bv[c] =
        reinterpret_cast<__m512bh>(_mm512_loadu_si512(panel + k * kHalfCols + 32 * c));
    const uint16_t* a[kHalfRows] = {r0 + k, r1 + k, r2 + k, r3 + k, r4 + k, r5 + k};
    OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) {
      int32_t pair;
      std::memcpy(&pair, a[r], sizeof(pair));
      const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], av, bv[c]);
    }
  }
  OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) OTTER_UNROLL for (int c = 0; c < kVecs; ++c)
      _mm512_storeu_ps(acc_f32 + r * kBF16Lanes + 16 * c, acc[r][c]);
  prefetch_rest(prefetch, (k_end - k_begin) / 2);
}

void bf16_tile(const uint16_t* const rows[kHalfRows], const uint16_t* panel, int64_t k_begin, int64_t k_end,
               float* acc_f32, bool accumulate, TilePrefetch prefetch, int64_t cols) {
  if (cols > 48)
    bf16_tile_vecs<4>(rows, panel, k_begin, k_end, acc_f32, accumulate, prefetch);
  else if (cols > 32)
    bf16_tile_vecs<3>(rows, panel, k_begin, k_end, acc_f32, accumulate, prefetch);
  else if (cols > 16)
    bf16_tile_vecs<2>(rows, panel, k_begin, k_end, acc_f32, accumulate, prefetch);
  else
    bf16_tile_vecs<1>(rows, panel, k_begin, k_end, acc_f32, accumulate, prefetch);
}

// out[c] = column c of a tile row (f16: lanes[2c] + lanes[2c + 1], its even-k and odd-k sums;
// bf16: lanes[c]) (+ bias[c]) (+ residual[c]) for c < cols, sixteen columns per step (scalar, this
// write-out took half the GEMM's time). Returns false if a sum is not finite (an f16 partial sum
// overflowed), checked here rather than in a second pass over the output. `stream`: full aligned
// vectors bypass the cache (the output of a large GEMM), not for a buffer read right after.
__attribute__((target("avx512f"))) bool write_row(HalfFormat format, const float* lanes, const float* bias,
                                                  const float* residual, int64_t cols, float* out,
                                                  bool stream = true) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 zero = _mm512_setzero_ps();
  __m512 poison = zero;  // x·0 is NaN exactly when x is inf or NaN
  for (int64_t c = 0; c < cols; c += 16) {
    const __mmask16 m = cols - c >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (cols - c)) - 1);
    __m512 sum;
    if (format == HalfFormat::F16) {
      const __m512 a = _mm512_loadu_ps(lanes + 2 * c), b = _mm512_loadu_ps(lanes + 2 * c + 16);
      sum = _mm512_add_ps(_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b));
    } else {
      sum = _mm512_maskz_loadu_ps(m, lanes + c);
    }
    if (bias) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(m, bias + c));
    poison = _mm512_mask_add_ps(poison, m, poison, _mm512_mul_ps(sum, zero));
    if (residual) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(m, residual + c));
    if (stream && m == 0xFFFF && reinterpret_cast<uintptr_t>(out + c) % 64 == 0)
      _mm512_stream_ps(out + c, sum);  // no read-for-ownership of the output line
    else
      _mm512_mask_storeu_ps(out + c, m, sum);
  }
  return _mm512_cmp_ps_mask(poison, zero, _CMP_EQ_OQ) == 0xFFFF;
}

namespace {
// One thread's 16-bit scratch. It grows to the largest request and keeps nothing across a growth
// (every caller writes what it reads), and its blocks come from a private Allocator: from 4 MB up
// those are mmaps advised to huge pages. A std::vector here zero-filled and copied the whole
// buffer at every growth, on fresh 4 KB pages: a 512x512 bf16 decode grows it at its two largest
// convolutions, which ran at half their warm rate (0.62 s instead of 0.28 s for 256 -> 128 at 512x512).
struct HalfScratch {
  Allocator pages;
  uint16_t* data = nullptr;
  size_t n = 0;

  ~HalfScratch() { release(); }
  void release() {
    if (data) pages.release(data, n * sizeof(uint16_t));
    data = nullptr;
    n = 0;
    pages.free_cached();
  }
};

HalfScratch* scratch_buffers() {
  thread_local HalfScratch buffers[2];
  return buffers;
}
}  // namespace

uint16_t* half_scratch(size_t n, int slot) {
  HalfScratch& s = scratch_buffers()[slot];
  if (s.n < n) {
    s.release();
    s.data = static_cast<uint16_t*>(s.pages.allocate(n * sizeof(uint16_t)));
    s.n = n;
  }
  return s.data;
}

void half_release_scratch() {
  for (int slot = 0; slot < 2; ++slot) scratch_buffers()[slot].release();
}

bool half_gemm_available(HalfFormat f) {
  const CpuFeatures& c = cpu_features();
  switch (f) {
    case HalfFormat::F16: return c.avx512fp16;
    case HalfFormat::BF16: return c.avx512_bf16;
    case HalfFormat::F16Weights: return c.avx2 && c.fma && c.f16c;
  }
  return false;
}

const char* half_format_name(HalfFormat f) {
  return f == HalfFormat::F16 ? "f16" : f == HalfFormat::BF16 ? "bf16" : "f16 weights with f32 arithmetic";
}

void f32_to_half_n(HalfFormat f, const float* in, uint16_t* out, size_t n) {
  if (f == HalfFormat::BF16)
    f32_to_bf16_n(in, out, n);
  else
    f32_to_f16_n(in, out, n);
}

namespace {
// `rows` runs of `cols` floats, `stride` apart, asked into L2: the residual a write-out will add.
// A skip connection was written long before (some 50 MB of other activations ago at 512x512) and
// is read from memory; read only at the write-out, a task's 96 short runs a row apart each waited
// on memory in turn. Asked for as each row block's tile first runs, they arrive while the task's
// other tiles compute. otter-microbench's BM_HalfGemmColdResidual (Zen 5, bf16, 2 threads, three
// interleaved rounds): 8192x320->320 528-541 -> 757-849 GFLOP/s (810-890 with no residual),
// 2048x640->640 735-756 -> 849-941; all asked for at the task's start instead: 570-610.
void prefetch_rows(const float* first, int64_t rows, int64_t stride, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; c += 16)
      _mm_prefetch(reinterpret_cast<const char*>(first + r * stride + c), _MM_HINT_T1);
}

// A tile row's columns written out: the AVX-512 formats' write_row, F16Weights' portable one (a
// function compiled for AVX-512 may use it before any branch, so the choice is made out here).
bool write_tile_row(HalfFormat format, const float* lanes, const float* bias, const float* residual, int64_t cols,
                    float* out, bool stream = true) {
  if (format == HalfFormat::F16Weights) {
    write_row_pairs(lanes, bias, residual, cols, out);
    return true;
  }
  return write_row(format, lanes, bias, residual, cols, out, stream);
}

// One row of a GEGLU panel: the tile's first kGegluCols columns are values, the next their gates;
// their sums (+ bias) as write_row makes them, then out[c] = value · GELU(gate) by geglu_row, the
// unfused op's arithmetic. False if a sum is not finite (f16 overflow).
bool write_row_geglu(HalfFormat format, const float* lanes, const float* bias, float* out) {
  alignas(64) float sums[kHalfCols];  // values, then gates
  const bool finite = write_tile_row(format, lanes, bias, nullptr, kHalfCols, sums, /*stream=*/false);
  geglu_row(sums, sums + kGegluCols, out, kGegluCols);
  return finite;
}

template <class A>
bool gemm_tiles(const A* a_data, int64_t M, const HalfPackedWeights& w, const float* bias, float* y,
                const float* residual);
}  // namespace

bool gemm_half(const float* x, int64_t M, const HalfPackedWeights& w, const float* bias, float* y,
               const float* residual) {
  OTTER_CHECK(half_gemm_available(w.format), "gemm_half: this CPU lacks the ", half_format_name(w.format),
              " instructions (",
              w.format == HalfFormat::F16    ? "AVX-512 FP16"
              : w.format == HalfFormat::BF16 ? "AVX-512 BF16"
                                             : "AVX2, FMA and F16C",
              ")");
  OTTER_CHECK(!w.geglu || residual == nullptr, "gemm_half: a fused GEGLU takes no residual");
  const int64_t K = w.k_padded;
  if (f32_activations(w.format)) {
    // The tiles read x itself; only an odd K needs rows padded with a zero (k is read in pairs).
    if (K == w.k) return gemm_tiles(x, M, w, bias, y, residual);
    auto* a_data = reinterpret_cast<float*>(half_scratch(static_cast<size_t>(2 * M * K), 0));
#pragma omp parallel for if (M * K > (1 << 16))
    for (int64_t m = 0; m < M; ++m) {
      std::copy_n(x + m * w.k, w.k, a_data + m * K);
      a_data[m * K + w.k] = 0.0f;
    }
    return gemm_tiles(static_cast<const float*>(a_data), M, w, bias, y, residual);
  }
  // x in 16 bits, rows padded to an even length with a zero (the kernels read k in pairs).
  uint16_t* a_data = half_scratch(static_cast<size_t>(M * K), 0);
#pragma omp parallel for if (M * K > (1 << 16))
  for (int64_t m = 0; m < M; ++m) {
    f32_to_half_n(w.format, x + m * w.k, a_data + m * K, static_cast<size_t>(w.k));
    if (K != w.k) a_data[m * K + w.k] = 0;
  }
  return gemm_tiles(static_cast<const uint16_t*>(a_data), M, w, bias, y, residual);
}

namespace {
// The GEMM over rows of A (the format's activation type), padded to K = w.k_padded.
template <class A>
bool gemm_tiles(const A* a_data, int64_t M, const HalfPackedWeights& w, const float* bias, float* y,
                const float* residual) {
  const int64_t K = w.k_padded, N = w.n;
  const int lanes = tile_lanes(w.format);
  const int64_t row_blocks = (M + kHalfRows - 1) / kHalfRows, panels = (N + kHalfCols - 1) / kHalfCols;

  // Blocked so a k-block of one panel (kKBlock x 64 columns, 32 KB) stays in L1 while a group of
  // row blocks passes over it; each row block's f32 tile lives in a per-task buffer until the
  // last k-block. Streaming whole panels from L2 for every row block ran at half the rate. 256 k
  // rather than 128 halves the tiles' loads and stores of their accumulators: on Zen 5 (bf16, 2
  // threads, three interleaved rounds) no shape slower, 128x1280->10240 620-670 -> 670-730
  // GFLOP/s, 8192x1280->320 590-610 -> 660-690, 2048^3 640-740 -> 740-760. Same sums in the same
  // order (f16's 128-k chunks still start every 128 k).
  constexpr int64_t kKBlock = 256, kGroup = 16;
  // The order of the (panel, group) tasks decides which operand a thread reads again. Groups
  // outer: a thread keeps one group's activation rows in cache and walks every weight panel, so
  // the weights are read once per group; panels outer: it keeps one panel and walks every group,
  // so the activations are read once per panel. The activations are the expensive ones to read
  // again (six rows a K stride apart per tile, which the prefetcher serves worst; the panels are
  // contiguous), so groups go outer while the weights stay in cache. Zen 5, 2 threads, bf16, old
  // and new interleaved: 2048x320->320 420-490 -> 610-650 GFLOP/s, 8192x1280->320 390-420 ->
  // 570-590, 512x640->640 560-610 -> 710-730 (the whole CFG step: within this VM's run-to-run
  // spread, -6 % in three interleaved pairs, no consistent difference in five more). Past a few
  // MB of weights (the feed-forward's 640x5120 and 1280x10240: 6.5 and 26 MB) reading them again
  // from memory costs more (measured 10-17 % slower), and panels go outer.
  constexpr int64_t kGroupsOuterMaxWeightBytes = int64_t{4} << 20;
  const bool groups_outer = static_cast<int64_t>(w.panels.size() * sizeof(uint16_t)) <= kGroupsOuterMaxWeightBytes;
  // Groups outer, each thread takes whole groups: as many groups as a multiple of the threads, of
  // equal size (128 rows are 22 row blocks: groups of 16 and 6 left one thread idle for 10 of the
  // 16, and 128x1280->1280 ran at 450-500 GFLOP/s; two groups of 11 run it at 650-700).
  int64_t group_blocks = kGroup;  // row blocks per group
  if (groups_outer && row_blocks > 0) {  // (no rows: no groups, and no division by zero)
    const int64_t threads = omp_get_max_threads(), fewest = (row_blocks + kGroup - 1) / kGroup;
    const int64_t count = std::min(row_blocks, (fewest + threads - 1) / threads * threads);
    group_blocks = (row_blocks + count - 1) / count;
  }
  const int64_t groups = (row_blocks + group_blocks - 1) / group_blocks;
  bool finite = true;
  const int64_t chunk = tiles_chunk(panels * groups, omp_get_max_threads());
#pragma omp parallel for schedule(dynamic, chunk) reduction(&& : finite)
  for (int64_t task = 0; task < panels * groups; ++task) {
    const int64_t p = groups_outer ? task % panels : task / groups, g = groups_outer ? task / panels : task % groups;
    alignas(64) float tiles[kGroup][kHalfRows * kMaxHalfLanes];
    const int64_t rb0 = g * group_blocks, rb1 = std::min(row_blocks, rb0 + group_blocks);
    const uint16_t* panel = w.panels.data() + p * K * kHalfCols;
    const int64_t n0 = p * kHalfCols, cols = std::min<int64_t>(kHalfCols, N - n0);  // the panel's columns
    for (int64_t kb = 0; kb < K; kb += kKBlock)
      for (int64_t rb = rb0; rb < rb1; ++rb) {
        const A* rows[kHalfRows];
        for (int r = 0; r < kHalfRows; ++r) rows[r] = a_data + std::min(rb * kHalfRows + r, M - 1) * K;
        if (residual && kb == 0)  // this block's residual lines, needed at the write-out (see prefetch_rows)
          prefetch_rows(residual + rb * kHalfRows * N + n0, std::min<int64_t>(kHalfRows, M - rb * kHalfRows), N, cols);
        // The weights' next block (this panel's next k, or the next panel's first) into L2 while
        // this one is in use, split over the group's tiles.
        const int64_t kend = std::min(K, kb + kKBlock);
        half_tile(w.format, rows, panel, kb, kend, tiles[rb - rb0], kb > 0,
                  tile_prefetch_share(panel + kb * kHalfCols, (kend - kb) * kHalfCols * 2, rb - rb0, rb1 - rb0),
                  N - n0);
      }
    for (int64_t rb = rb0; rb < rb1; ++rb)
      for (int r = 0; r < kHalfRows && rb * kHalfRows + r < M; ++r) {
        const int64_t row = rb * kHalfRows + r;
        const float* row_lanes = tiles[rb - rb0] + r * lanes;
        if (w.geglu)  // this panel's kGegluCols outputs of the [M, N/2] result
          finite = write_row_geglu(w.format, row_lanes, bias ? bias + n0 : nullptr,
                                   y + row * (N / 2) + p * kGegluCols) &&
                   finite;
        else
          finite = write_tile_row(w.format, row_lanes, bias ? bias + n0 : nullptr,
                                  residual ? residual + row * N + n0 : nullptr, cols, y + row * N + n0) &&
                   finite;
      }
    _mm_sfence();  // the streaming stores are weakly ordered: complete them before other threads read y
  }
  return finite;
}
}  // namespace

}  // namespace otter::cpu

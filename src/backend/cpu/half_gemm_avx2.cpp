// The F16Weights tile (half_gemm.h): f16 weight panels widened to f32 as they are read (F16C),
// f32 activation rows, f32 FMAs on 8 lanes: the 16-bit weights path for CPUs with AVX2 but
// without AVX-512's 16-bit arithmetic. The panels are the f16 format's ([K/2][64][2]: a column's
// W[k] and W[k+1] side by side), so a row's k and k+1 are broadcast together (one 64-bit
// broadcast from memory, a pure load) and each lane sums every other k of one column, as the
// AVX-512 f16 tile's do; the write-out adds the pair.
//
// Registers: 16 on AVX2. A pass covers 8 of the panel's 64 columns (two vectors of 4 columns x 2 k)
// for six rows: 12 accumulators, 2 widened panel vectors and a broadcast. Per k pair that is 12
// FMAs against 2 conversions and 8 loads: on one Zen 3 core, data in L1, 95 GFLOP/s, as fast as
// the same tile on f32 panels (the conversions do not set the pace). The panel's other columns are
// the next passes over the same rows, so k goes in chunks of kF16WChunk whose rows (3 KB) and
// panel block (16 KB) stay in L1 through the eight passes; over a whole tap of a convolution
// (up to 2560 channels: 60 KB of rows, 320 KB of panel) each pass read them from L2 again.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "backend/cpu/half_gemm.h"
#include "backend/cpu/kernels.h"

namespace otter::cpu {

constexpr int64_t kF16WChunk = 128;  // k per chunk (even)

__attribute__((target("avx2,fma,f16c"))) void f16w_tile(const float* const rows[kHalfRows], const uint16_t* panel,
                                                          int64_t k_begin, int64_t k_end, float* acc_f32,
                                                          bool accumulate, TilePrefetch prefetch, int64_t cols) {
  constexpr int kPassCols = 8;
  const int passes = static_cast<int>(std::min<int64_t>(kHalfCols, cols) + kPassCols - 1) / kPassCols;
  const float* r0 = rows[0];
  const float* r1 = rows[1];
  const float* r2 = rows[2];
  const float* r3 = rows[3];
  const float* r4 = rows[4];
  const float* r5 = rows[5];
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kF16WChunk) {
    const int64_t k1 = std::min(k_end, k0 + kF16WChunk);
    const bool add = accumulate || k0 != k_begin;
    for (int pass = 0; pass < passes; ++pass) {
      // This pass's lanes of each tile row: columns [8·pass, 8·pass + 8), two lanes each.
      float* out = acc_f32 + pass * 2 * kPassCols;
      __m256 acc[kHalfRows][2];
      OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) {
        acc[r][0] = add ? _mm256_loadu_ps(out + r * kF16Lanes) : _mm256_setzero_ps();
        acc[r][1] = add ? _mm256_loadu_ps(out + r * kF16Lanes + 8) : _mm256_setzero_ps();
      }
      const uint16_t* pass_panel = panel + pass * 2 * kPassCols;
      for (int64_t k = k0; k < k1; k += 2) {
        // The weights' next block into L2, one line per k pair, during the first pass.
        if (pass == 0) prefetch_line(prefetch, (k - k_begin) / 2);
        const uint16_t* w = pass_panel + k * kHalfCols;
        const __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
        const __m256 b1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 8)));
        const float* a[kHalfRows] = {r0 + k, r1 + k, r2 + k, r3 + k, r4 + k, r5 + k};
        OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) {
          // [a_k, a_k+1] in every pair of lanes.
          const __m256 av = _mm256_castpd_ps(_mm256_broadcast_sd(reinterpret_cast<const double*>(a[r])));
          acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
      }
      OTTER_UNROLL for (int r = 0; r < kHalfRows; ++r) {
        _mm256_storeu_ps(out + r * kF16Lanes, acc[r][0]);
        _mm256_storeu_ps(out + r * kF16Lanes + 8, acc[r][1]);
      }
    }
  }
  prefetch_rest(prefetch, (k_end - k_begin) / 2);
}

OTTER_KERNEL void write_row_pairs(const float* lanes, const float* bias, const float* residual, int64_t cols,
                                  float* out) {
  for (int64_t c = 0; c < cols; ++c) {
    float v = lanes[2 * c] + lanes[2 * c + 1];
    if (bias) v += bias[c];
    if (residual) v += residual[c];
    out[c] = v;
  }
}

}  // namespace otter::cpu

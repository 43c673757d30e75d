// GCC 12 warns about its own AVX-512 intrinsic headers (the known false positive on the
// extract/convert helpers, as in attention_kernel.cpp); the intrinsics are used as documented.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "backend/cpu/f16_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>

#include "core/error.h"
#include "core/half.h"

namespace otter::cpu {
namespace {

#define OTTER_UNROLL _Pragma("GCC unroll 8")

// x rows [m0, m0 + rows) rounded to f16 and interleaved k-major, [K][kF16Rows], so the tile's
// broadcasts for one k are 16 contiguous bytes. Missing rows are zero.
void pack_rows(const float* x, int64_t m0, int rows, int64_t K, uint16_t* out) {
  std::vector<uint16_t> row(static_cast<size_t>(K));
  for (int r = 0; r < kF16Rows; ++r) {
    if (r < rows) f32_to_f16_n(x + (m0 + r) * K, row.data(), static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) out[k * kF16Rows + r] = r < rows ? row[static_cast<size_t>(k)] : 0;
  }
}

// One tile: acc_f32[kF16Rows][kF16Cols] = packed rows · panel, f16 products summed in f16 over
// kF16Chunk terms, then converted and added into the f32 tile. Six rows x four vectors: each
// broadcast (a shuffle-port uop for 16-bit elements) feeds four FMAs, and the 24 accumulators,
// four panel vectors and one broadcast fit the 32 registers. (Broadcasts embedded in the FMAs'
// memory operands, {1to32}, measured 1.8x slower on this Xeon.)
__attribute__((target("avx512f,avx512bw,avx512fp16"))) void tile(const uint16_t* a, const uint16_t* b, int64_t K,
                                                                  float* acc_f32) {
  constexpr int kVecs = kF16Cols / 32;
  for (int i = 0; i < kF16Rows * kF16Cols; ++i) acc_f32[i] = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kF16Chunk) {
    const int64_t k1 = std::min<int64_t>(K, k0 + kF16Chunk);
    __m512h acc[kF16Rows][kVecs];
    OTTER_UNROLL for (int r = 0; r < kF16Rows; ++r) OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[r][c] =
        _mm512_setzero_ph();
    for (int64_t k = k0; k < k1; ++k) {
      __m512h bv[kVecs];
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) bv[c] = _mm512_loadu_ph(b + k * kF16Cols + 32 * c);
      const uint16_t* ak = a + k * kF16Rows;
      OTTER_UNROLL for (int r = 0; r < kF16Rows; ++r) {
        const __m512h av = _mm512_castsi512_ph(_mm512_set1_epi16(static_cast<short>(ak[r])));
        OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[r][c] = _mm512_fmadd_ph(av, bv[c], acc[r][c]);
      }
    }
    OTTER_UNROLL for (int r = 0; r < kF16Rows; ++r) {
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) {
        const __m512i bits = _mm512_castph_si512(acc[r][c]);
        const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(bits));
        const __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(bits, 1));
        float* dst = acc_f32 + r * kF16Cols + c * 32;
        _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), lo));
        _mm512_storeu_ps(dst + 16, _mm512_add_ps(_mm512_loadu_ps(dst + 16), hi));
      }
    }
  }
}

}  // namespace

bool f16_gemm_available() { return __builtin_cpu_supports("avx512fp16"); }

F16PackedWeights pack_f16_weights(const Tensor& w_in) {
  OTTER_CHECK(w_in.rank() == 2, "pack_f16_weights needs [N, K], got ", w_in.describe());
  const Tensor w = w_in.to(DType::F16).contiguous();
  F16PackedWeights p;
  p.n = w.dim(0);
  p.k = w.dim(1);
  const int64_t panels = (p.n + kF16Cols - 1) / kF16Cols;
  p.panels.assign(static_cast<size_t>(panels * p.k * kF16Cols), 0);
  const auto* src = w.data<uint16_t>();
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t k = 0; k < p.k; ++k)
      p.panels[static_cast<size_t>(((n / kF16Cols) * p.k + k) * kF16Cols + n % kF16Cols)] = src[n * p.k + k];
  return p;
}

void gemm_f16(const float* x, int64_t M, const F16PackedWeights& w, const float* bias, float* y) {
  OTTER_CHECK(f16_gemm_available(), "gemm_f16 needs a CPU with AVX-512 FP16");
  const int64_t K = w.k, N = w.n;
  const int64_t row_blocks = (M + kF16Rows - 1) / kF16Rows, panels = (N + kF16Cols - 1) / kF16Cols;
  std::vector<uint16_t> a(static_cast<size_t>(row_blocks * K * kF16Rows));
#pragma omp parallel for
  for (int64_t rb = 0; rb < row_blocks; ++rb)
    pack_rows(x, rb * kF16Rows, static_cast<int>(std::min<int64_t>(kF16Rows, M - rb * kF16Rows)), K,
              a.data() + rb * K * kF16Rows);

  // Panel-major: one panel of W (K x 64 halves) stays in L2 while every row block streams past it.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t rb = 0; rb < row_blocks; ++rb) {
      alignas(64) float acc[kF16Rows * kF16Cols];
      tile(a.data() + rb * K * kF16Rows, w.panels.data() + p * K * kF16Cols, K, acc);
      const int64_t n0 = p * kF16Cols, cols = std::min<int64_t>(kF16Cols, N - n0);
      for (int r = 0; r < kF16Rows && rb * kF16Rows + r < M; ++r) {
        float* out = y + (rb * kF16Rows + r) * N + n0;
        for (int64_t c = 0; c < cols; ++c) out[c] = acc[r * kF16Cols + c] + (bias ? bias[n0 + c] : 0.0f);
      }
    }
}

}  // namespace otter::cpu

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

// Register tiles are arrays of vectors indexed by compile-time loops; unless those loops are
// unrolled GCC keeps the arrays on the stack.
#define OTTER_UNROLL _Pragma("GCC unroll 8")

// Six rows x four vectors: each broadcast (a shuffle-port uop for 16-bit elements) feeds four
// FMAs, and the 24 accumulators, four panel vectors and one broadcast fit the 32 registers.
// (Broadcasts embedded in the FMAs' memory operands, {1to32}, measured 1.8x slower here.)
__attribute__((target("avx512f,avx512bw,avx512fp16"))) void f16_tile(const uint16_t* const rows[kF16Rows],
                                                                      const uint16_t* panel, int64_t K, float* acc_f32) {
  constexpr int kVecs = kF16Cols / 32;
  const uint16_t* r0 = rows[0];
  const uint16_t* r1 = rows[1];
  const uint16_t* r2 = rows[2];
  const uint16_t* r3 = rows[3];
  const uint16_t* r4 = rows[4];
  const uint16_t* r5 = rows[5];
  for (int64_t k0 = 0; k0 < K; k0 += kF16Chunk) {
    const int64_t k1 = std::min<int64_t>(K, k0 + kF16Chunk);
    __m512h acc[kF16Rows][kVecs];
    OTTER_UNROLL for (int r = 0; r < kF16Rows; ++r) OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[r][c] =
        _mm512_setzero_ph();
    for (int64_t k = k0; k < k1; ++k) {
      __m512h bv[kVecs];
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) bv[c] = _mm512_loadu_ph(panel + k * kF16Cols + 32 * c);
      const uint16_t a[kF16Rows] = {r0[k], r1[k], r2[k], r3[k], r4[k], r5[k]};
      OTTER_UNROLL for (int r = 0; r < kF16Rows; ++r) {
        const __m512h av = _mm512_castsi512_ph(_mm512_set1_epi16(static_cast<short>(a[r])));
        OTTER_UNROLL for (int c = 0; c < kVecs; ++c) acc[r][c] = _mm512_fmadd_ph(av, bv[c], acc[r][c]);
      }
    }
    OTTER_UNROLL for (int r = 0; r < kF16Rows; ++r) {
      OTTER_UNROLL for (int c = 0; c < kVecs; ++c) {
        const __m512i bits = _mm512_castph_si512(acc[r][c]);
        const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(bits));
        const __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(bits, 1));
        float* dst = acc_f32 + r * kF16Cols + c * 32;
        // The first chunk stores: zeroing the tile first (a rep stos) took a quarter of the time.
        _mm512_storeu_ps(dst, k0 == 0 ? lo : _mm512_add_ps(_mm512_loadu_ps(dst), lo));
        _mm512_storeu_ps(dst + 16, k0 == 0 ? hi : _mm512_add_ps(_mm512_loadu_ps(dst + 16), hi));
      }
    }
  }
}

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
  std::vector<uint16_t> a(static_cast<size_t>(M * K));
  f32_to_f16_n(x, a.data(), a.size());

  // Panel-major: one panel of W (K x 128 halves) stays in L2 while the row blocks stream past it.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t rb = 0; rb < row_blocks; ++rb) {
      alignas(64) float acc[kF16Rows * kF16Cols];
      const uint16_t* rows[kF16Rows];
      for (int r = 0; r < kF16Rows; ++r) rows[r] = a.data() + std::min(rb * kF16Rows + r, M - 1) * K;
      f16_tile(rows, w.panels.data() + p * K * kF16Cols, K, acc);
      const int64_t n0 = p * kF16Cols, cols = std::min<int64_t>(kF16Cols, N - n0);
      for (int r = 0; r < kF16Rows && rb * kF16Rows + r < M; ++r) {
        float* out = y + (rb * kF16Rows + r) * N + n0;
        const float* in = acc + r * kF16Cols;
        if (bias)
          for (int64_t c = 0; c < cols; ++c) out[c] = in[c] + bias[n0 + c];
        else
          std::copy(in, in + cols, out);
      }
    }
}

}  // namespace otter::cpu

#pragma once
// A matrix multiply in AVX-512 FP16 arithmetic: groundwork for an f16 compute path, not used by
// the backend's ops yet (measured below: not enough faster than oneDNN f32 to pay for itself). On
// CPUs with AVX-512 FP16 an f16 FMA does 32 multiply-adds against 16 for f32: the precision probe
// measures 357 against 166 GFLOP/s per core on the Xeon otter is developed on, where bf16 dot
// products reach only 89.
//
// Numerics: operands are rounded to f16 (11 significant bits, 8x finer than bf16's 8); products
// are summed in f16 over chunks of kF16Chunk consecutive k, and each chunk's sum is added into an
// f32 accumulator. With unit roundoff u = 2^-11, chunks of c terms leave a relative error of at
// most about u·c/sqrt(3) — 1.8% for c = 64 when all terms share a sign; with mixed signs the
// test measures 0.15% of max|y| (K = 65..1280), the order of bf16's operand rounding alone.
// f16's range (±65504) holds SD's activations (the network runs in f16 on GPUs); a chunk sum is
// bounded by c·max|x|·max|w|.
//
// The micro-kernel, C[6 rows][128 columns] (f32) = A rows (f16, broadcast one element at a time)
// · a panel of B (f16, [K][128], four vectors per k), is written for both uses an f16 path needs:
//   * linear layers: A = the activations [M, K], B = the weights, packed once;
//   * convolutions (NCHW): A = the weights [O, C·kh·kw], B = the input gathered into panels of
//     128 output pixels (an im2col done panel by panel, so it stays in L2).
//
// Measured on the 2-core Xeon against oneDNN f32 in the same run (otter-microbench BM_F16Gemm /
// BM_MatmulShapes): 4096x320x320 311 vs 268 GFLOP/s, 8192x320x2560 322 vs 279, 2048³ 335-409 vs
// 236-307: 1.15-1.3x, while f16 FMAs run at 2.15x the f32 rate. The profile: 86% in the tile's
// k loop, which issues 24 FMAs + 6 broadcasts (a shuffle uop each, on an FMA port) per k and
// streams the 80 KB-2.6 MB panel from L2. What is left: block K so a panel chunk stays in L1,
// then the im2col panels for convolutions and an overflow check in the ops.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace otter::cpu {

constexpr int kF16Chunk = 64;   // k terms summed in f16 before the f32 accumulator
constexpr int kF16Rows = 6;     // rows of A per register tile
constexpr int kF16Cols = 128;   // columns per register tile (four vectors of 32 halves)

bool f16_gemm_available();  // AVX-512 FP16 present

// W [N, K] (any float dtype) packed once for f16_gemm_rows: panels of kF16Cols output columns,
// k-major, f16 bits, zero past N.
struct F16PackedWeights {
  int64_t n = 0, k = 0;
  std::vector<uint16_t> panels;  // [ceil(N / kF16Cols)][K][kF16Cols]
};
F16PackedWeights pack_f16_weights(const Tensor& w);

// y[M, N] = x[M, K] · Wᵀ (+ bias[N] if not null), x and y f32 row-major, threaded with OpenMP.
void gemm_f16(const float* x, int64_t m, const F16PackedWeights& w, const float* bias, float* y);

// The micro-kernel: acc[kF16Rows][kF16Cols] = Σ_k rows[r][k] · panel[k][c], rows given as
// pointers to f16 rows of length K (tail rows may repeat a valid row; their results are ignored).
void f16_tile(const uint16_t* const rows[kF16Rows], const uint16_t* panel, int64_t K, float* acc);

}  // namespace otter::cpu

#pragma once
// A matrix multiply in AVX-512 FP16 arithmetic (groundwork for an f16 compute path; not used by
// the backend's ops yet). On CPUs with AVX-512 FP16 an f16 FMA does 32 multiply-adds against 16
// for f32: the probe measures 357 against 166 GFLOP/s per core on the Xeon otter is developed on,
// where bf16 dot products reach only 89.
//
// Numerics: operands are rounded to f16 (11 significant bits, 8x finer than bf16's 8); products
// are summed in f16 over chunks of kF16Chunk consecutive k, and each chunk's sum is added into an
// f32 accumulator. With unit roundoff u = 2^-11, chunks of c terms leave a relative error of at
// most about u·c/sqrt(3) — 1.8% for c = 64 when all terms share a sign; with mixed signs the
// test measures 0.15% of max|y| (K = 65..1280), the order of bf16's operand rounding alone.
// f16's range (±65504) holds SD's activations (the network runs in f16 on GPUs); a chunk sum is
// bounded by c·max|x|·max|w|.
//
// Speed on the 2-core Xeon, against oneDNN f32 in the same run (otter-microbench BM_F16Gemm /
// BM_MatmulShapes): 2048³ 409 vs 236-279 GFLOP/s; SD's K = 320 shapes about equal (~250-285):
// the scalar packing of x and the scalar write-out are not yet vectorised. Chunks of 32 instead
// of 64 cost 13% at 2048³.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace otter::cpu {

constexpr int kF16Chunk = 64;   // k terms summed in f16 before the f32 accumulator
constexpr int kF16Rows = 6;     // rows of x per register tile
constexpr int kF16Cols = 128;   // output columns per register tile (four vectors of 32 halves)

// W [N, K] (any float dtype) packed once: panels of kF16Cols output columns, k-major, f16 bits,
// zero past N.
struct F16PackedWeights {
  int64_t n = 0, k = 0;
  std::vector<uint16_t> panels;  // [ceil(N / kF16Cols)][K][kF16Cols]
};
F16PackedWeights pack_f16_weights(const Tensor& w);

bool f16_gemm_available();  // AVX-512 FP16 present

// y[M, N] = x[M, K] · Wᵀ (+ bias[N] if not null), x and y f32 row-major, threaded with OpenMP.
void gemm_f16(const float* x, int64_t m, const F16PackedWeights& w, const float* bias, float* y);

}  // namespace otter::cpu

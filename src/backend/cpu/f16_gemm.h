#pragma once
// A matrix multiply in AVX-512 FP16 arithmetic: groundwork for an f16 compute path, not used by
// the backend's ops yet (measured below: not enough faster than oneDNN f32 to pay for itself). On
// CPUs with AVX-512 FP16 an f16 FMA does 32 multiply-adds against 16 for f32: the precision probe
// measures 357 against 166 GFLOP/s per core on the Xeon otter is developed on, where bf16 dot
// products reach only 89.
//
// Numerics: operands are rounded to f16 (11 significant bits, 8x finer than bf16's 8); products
// are summed in f16 over chunks of kF16Chunk consecutive k (each accumulator lane takes every other
// k, so 64 terms), and each chunk's sum is added into an f32 accumulator. With unit roundoff
// u = 2^-11, partial sums of c terms leave a relative error of at most about u·c/sqrt(3) — 1.8% for
// c = 64 when all terms share a sign; with mixed signs the test measures at most 0.163% of max|y|
// (K = 65..1280), the order of bf16's operand rounding alone.
// f16's range (±65504) holds SD's activations (the network runs in f16 on GPUs); a chunk sum is
// bounded by c·max|x|·max|w|.
//
// The micro-kernel, C[6 rows][128 columns] (f32) = A rows (f16, broadcast one element at a time)
// · a panel of B (f16, [K][128], four vectors per k), is written for both uses an f16 path needs:
//   * linear layers: A = the activations [M, K], B = the weights, packed once;
//   * convolutions (NCHW): A = the weights [O, C·kh·kw], B = the input gathered into panels of
//     128 output pixels (an im2col done panel by panel, so it stays in L2).
//
// Measured on the 2-core Xeon, medians of 3 against oneDNN f32 in the same run (otter-microbench
// BM_F16Gemm / BM_MatmulShapes): 4096x320x320 360 vs 294 GFLOP/s (1.22x), 8192x320x2560 381 vs
// 288 (1.32x), 2048³ 421 vs 285 (1.48x), with 64-k chunks; the tile alone on L1-resident data runs
// at 332 GFLOP/s on one core with 128-k chunks (93% of the f16 FMA rate; 299 with 64-k chunks,
// whose f32 flushes cost a tenth). Three changes got it there from 1.0x: broadcasting k in
// pairs (vpbroadcastd is a pure load; a 16-bit broadcast took an FMA port: 169 -> 298 GFLOP/s per
// core), storing the first chunk instead of zeroing the tile, and writing the output with
// streaming stores (the read-for-ownership of a large output took a fifth of the time; a network
// whose next op reads the output straight back may prefer cached stores — to measure when the
// ops use this). What is left before the ops can: x's conversion and the write-out are still
// outside the register tiles (11% and up to 20% at K = 320), the im2col panels for convolutions,
// and an overflow check in the ops.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace otter::cpu {

constexpr int kF16Chunk = 128;  // k terms per f16 partial sum (each lane sums every other one: 64)
constexpr int kF16Rows = 6;     // rows of A per register tile
constexpr int kF16Cols = 64;    // columns per register tile (four vectors of 16 columns x 2 k)
constexpr int kF16Lanes = 2 * kF16Cols;  // f32 accumulator lanes per tile row (each column's k pairs)

bool f16_gemm_available();  // AVX-512 FP16 present

// A grow-only f16 buffer of at least n elements, one per (calling thread, slot), reused across
// calls: the f16 copies of activations are rebuilt every call, and fresh buffers page-faulted and
// zero-filled megabytes each time (at 512x512 that cost 15% of a CFG step), while the caching
// allocator kept one block per distinct size (+0.4 GB). Slot 0: gemm_f16's input; slot 1: the
// convolutions' NHWC input.
uint16_t* f16_scratch(size_t n, int slot);
// Frees the calling thread's scratch buffers (they grow again on the next call).
void f16_release_scratch();

// W [N, K] (any float dtype) packed once for f16_gemm_rows: panels of kF16Cols output columns,
// k-major, f16 bits, zero past N.
struct F16PackedWeights {
  int64_t n = 0, k = 0, k_padded = 0;  // k_padded: K rounded up to even (the kernel takes k in pairs)
  std::vector<uint16_t> panels;        // [ceil(N / kF16Cols)][k_padded / 2][kF16Cols][2]
};
F16PackedWeights pack_f16_weights(const Tensor& w);

// y[M, N] = x[M, K] · Wᵀ (+ bias[N]) (+ residual[M, N]), each added where not null; x, y and the
// residual f32 row-major (the residual may not alias y), threaded with OpenMP. Returns false if a
// product is not finite (f16 overflow; the caller recomputes in f32).
bool gemm_f16(const float* x, int64_t m, const F16PackedWeights& w, const float* bias, float* y,
              const float* residual = nullptr);

// The micro-kernel: acc[kF16Rows][kF16Lanes] (+)= the products of rows[r][k] and the panel over
// k in [k_begin, k_end) (both even), column c's sums in lanes 2c (even k) and 2c + 1 (odd k).
// Rows are f16 of even length (tail rows may repeat a valid row; their results are ignored);
// `accumulate` adds to acc instead of overwriting it.
void f16_tile(const uint16_t* const rows[kF16Rows], const uint16_t* panel, int64_t k_begin, int64_t k_end, float* acc,
              bool accumulate);

}  // namespace otter::cpu

#pragma once
// Matrix multiplies on 16-bit operands with one register-tile design for both formats the CPUs
// otter runs on offer at twice the f32 rate:
//   * f16 (AVX-512 FP16, Intel Sapphire Rapids-class Xeons): vfmadd...ph, products summed in f16;
//   * bf16 (AVX-512 BF16, AMD Zen 4/5, also those Xeons): vdpbf16ps, products of bf16 pairs summed
//     into f32 lanes.
// And, where neither runs, the f16 weight panels alone (F16Weights, half_gemm_avx2.cpp): AVX2
// widens them as it reads them and multiplies f32 activations in f32, for half the memory.
// Both take k in pairs: a row's two 16-bit values for k and k+1 are broadcast together as one
// 32-bit element (vpbroadcastd from memory is a pure load; a 16-bit broadcast costs a shuffle uop
// on an FMA port, which held the f16 kernel at half the FMA rate), and both read the same packed
// weight panels: for each pair, W[k] and W[k+1] of one column in adjacent 16-bit slots.
//
// f16 numerics: operands are rounded to f16 (11 significant bits, 8x finer than bf16's 8); products
// are summed in f16 over chunks of kF16Chunk consecutive k (each accumulator lane takes every other
// k, so 64 terms), and each chunk's sum is added into an f32 accumulator. With unit roundoff
// u = 2^-11, partial sums of c terms leave a relative error of at most about u·c/sqrt(3) — 1.8% for
// c = 64 when all terms share a sign; with mixed signs the test measures at most 0.163% of max|y|
// (K = 65..1280), the order of bf16's operand rounding alone. f16's range (±65504) holds SD's
// activations (the network runs in f16 on GPUs); a chunk sum is bounded by c·max|x|·max|w|.
//
// bf16 numerics: operands rounded to bf16 (8 significant bits), each pair's products added into an
// f32 lane (vdpbf16ps), so the sum is f32 throughout, as oneDNN's bf16 matmul: the error is the
// operands' rounding (the test's bound is the bf16 ops' 2e-2 of max|y|). No overflow short of f32's.
//
// The micro-kernel, C[6 rows][64 columns] (f32) = A rows (16-bit, a pair at a time) · a panel of B
// ([K/2][64][2]), is written for both uses a 16-bit path needs:
//   * linear layers: A = the activations [M, K], B = the weights, packed once;
//   * convolutions (implicit GEMM): A = the input's channel vectors, one row pointer per output
//     pixel and kernel tap, B = the weights packed as [taps·C][O] (half_ops.cpp).
// An f16 tile keeps each column's even-k and odd-k sums in two lanes (kF16Lanes per row, added at
// write-out); a bf16 tile's vdpbf16ps adds the pair itself (kBF16Lanes per row).
//
// Measured (f16) on the 2-core Xeon, medians of 3 against oneDNN f32 in the same run
// (otter-microbench BM_F16Gemm / BM_MatmulShapes): 4096x320x320 360 vs 294 GFLOP/s (1.22x),
// 8192x320x2560 381 vs 288 (1.32x), 2048³ 421 vs 285 (1.48x), with 64-k chunks; the tile alone on
// L1-resident data runs at 332 GFLOP/s on one core with 128-k chunks (93% of the f16 FMA rate).
// Storing the first chunk instead of zeroing the tile, and writing the output with streaming
// stores (the read-for-ownership of a large output took a fifth of the time), got the rest.
#include <xmmintrin.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace otter::cpu {

// F16Weights: f16 weights, read by an AVX2 + FMA + F16C tile that widens them to f32 as it
// loads them, with f32 activations and f32 arithmetic: for CPUs without AVX-512's 16-bit
// arithmetic (AMD Zen 2/3, Intel client cores), where the f32 path held SD 1.5's UNet as 3.4 GB
// of f32. The weights take 2 bytes (an f16 checkpoint's values exactly); the sums are f32's.
enum class HalfFormat { F16, BF16, F16Weights };

constexpr int kF16Chunk = 128;  // k terms per f16 partial sum (each lane sums every other one: 64)
constexpr int kHalfRows = 6;    // rows of A per register tile
constexpr int kHalfCols = 64;   // columns per register tile (four vectors of 16 columns x 2 k)
constexpr int kF16Lanes = 2 * kHalfCols;  // f32 accumulator lanes per f16 tile row (each column's k pairs)
constexpr int kBF16Lanes = kHalfCols;     // f32 lanes per bf16 tile row (one per column)
constexpr int kMaxHalfLanes = kF16Lanes;
// F16Weights keeps the f16 tile's lanes: a column's even-k and odd-k sums apart.
constexpr int tile_lanes(HalfFormat f) { return f == HalfFormat::BF16 ? kBF16Lanes : kF16Lanes; }
// The activations the tiles read: 16-bit for F16 and BF16, f32 for F16Weights.
constexpr bool f32_activations(HalfFormat f) { return f == HalfFormat::F16Weights; }
// The 16-bit type of the packed weights: bf16 for BF16, f16 for F16 and F16Weights.
constexpr DType half_dtype(HalfFormat f) { return f == HalfFormat::BF16 ? DType::BF16 : DType::F16; }

bool half_gemm_available(HalfFormat f);  // AVX-512 FP16 / AVX-512 BF16 / AVX2 + FMA + F16C present
const char* half_format_name(HalfFormat f);

// f32 -> the format's 16-bit bits (F16Weights: f16), n elements (round to nearest even).
void f32_to_half_n(HalfFormat f, const float* in, uint16_t* out, size_t n);

// A grow-only 16-bit buffer of at least n elements, one per (calling thread, slot), reused across
// calls: the 16-bit copies of activations are rebuilt every call, and fresh buffers page-faulted
// and zero-filled megabytes each time (at 512x512 that cost 15% of a CFG step), while the caching
// allocator kept one block per distinct size (+0.4 GB). Slot 0: gemm_half's input; slot 1: the
// convolutions' NHWC input.
uint16_t* half_scratch(size_t n, int slot);
// Frees the calling thread's scratch buffers (they grow again on the next call).
void half_release_scratch();

// A vector's allocator that leaves new elements uninitialised (resize without the zero fill):
// the packing writes every element itself, on the threads that pack, so the pages of a UNet's
// 0.86 GB of panels are first touched (faulted in and zeroed by the kernel) in parallel rather
// than by one thread's fill before the packing.
template <class T>
struct UninitializedAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  template <class U>
  void construct(U*) noexcept {}
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// W [N, K] (any float dtype) packed once for the tiles (half_pack.cpp): panels of kHalfCols output columns,
// k-major, 16-bit bits of `format`, zero past N.
struct HalfPackedWeights {
  HalfFormat format = HalfFormat::F16;
  int64_t n = 0, k = 0, k_padded = 0;  // k_padded: K rounded up to even (the kernels take k in pairs)
  std::vector<uint16_t, UninitializedAllocator<uint16_t>> panels;  // [ceil(N / kHalfCols)][k_padded / 2][kHalfCols][2]
  bool geglu = false;                  // packed by pack_half_weights_geglu
};
HalfPackedWeights pack_half_weights(const Tensor& w, HalfFormat format);
// A convolution's W [O, C, kh, kw] packed as the [O, taps · Cp] matrix the implicit GEMM reads
// (k = (i · kw + j) · Cp + c; zero for channels C..Cp-1), without a reordered copy.
HalfPackedWeights pack_half_conv_weights(const Tensor& w, int64_t cp, HalfFormat format);

// A GEGLU projection's W [2C, K] (values in rows [0, C), gates in [C, 2C)) packed so that each
// panel holds kGegluCols value columns and their gates: gemm_half then writes value · GELU(gate)
// for the panel's kGegluCols outputs from one tile, and the [M, 2C] projection never exists.
// C must be a multiple of kGegluCols (SD's 1280, 2560, 5120 are); `bias` [2C] is reordered the
// same way into packed_bias.
constexpr int64_t kGegluCols = kHalfCols / 2;
HalfPackedWeights pack_half_weights_geglu(const Tensor& w, const std::vector<float>& bias, HalfFormat format,
                                          std::vector<float>& packed_bias);

// y[M, N] = x[M, K] · Wᵀ (+ bias[N]) (+ residual[M, N]), each added where not null; x, y and the
// residual f32 row-major (the residual may not alias y), threaded with OpenMP. Returns false if a
// product is not finite (f16 overflow; the caller recomputes in f32). Weights packed for GEGLU
// (w.geglu) give y[M, N/2] = value · GELU(gate) instead, with bias in their packed order and no
// residual: geglu()'s values for the unfused projection.
bool gemm_half(const float* x, int64_t m, const HalfPackedWeights& w, const float* bias, float* y,
               const float* residual = nullptr);

// Cache lines a tile call asks for ahead of their use (into L2), one per k pair it computes, the
// rest after its loop: the weights the caller's next block of work will read. A UNet step reads its
// 1.7 GB of weights from memory once; read only when a tile reaches them, each weight block's first
// tile waited on memory at one core's streaming rate, and the deep levels (few pixels per weight)
// ran well below their rate on weights in cache: Zen 5, bf16, 256x256, the 3x3 1280->1280
// convolutions at 4x4 ran at 330-475 GFLOP/s in the UNet and 650 in otter-microbench (the same
// 29 MB of weights each iteration, from cache); with the prefetch 520-540 in the UNet, and the
// CFG step 0.581 -> 0.568 s, the batch-1 step 0.310 -> 0.296 s (medians of four interleaved runs).
struct TilePrefetch {
  const uint16_t* at = nullptr;  // the first line
  int64_t lines = 0;             // 64-byte lines from `at`
};

// The part of the `bytes` after `block` (a contiguous block of weights) that the tile call
// `index` of `count` calls over the block asks for: the calls split it evenly.
inline TilePrefetch tile_prefetch_share(const uint16_t* block, int64_t bytes, int64_t index, int64_t count) {
  const int64_t lines = (bytes + 63) / 64, share = (lines + count - 1) / count;
  const int64_t first = std::min(lines, index * share);
  return {block + bytes / 2 + first * 32, std::min(lines, first + share) - first};
}

// Line `line` of a tile's prefetch into L2, if it has that many (the tiles ask for one per k pair).
inline void prefetch_line(TilePrefetch p, int64_t line) {
  if (line < p.lines) _mm_prefetch(reinterpret_cast<const char*>(p.at) + line * 64, _MM_HINT_T1);
}
// The lines a tile's loop did not reach (it asks for one per k pair): a group of fewer tiles than
// the block has quarters asks for more than its loop has iterations.
inline void prefetch_rest(TilePrefetch p, int64_t done) {
  for (int64_t line = done; line < p.lines; ++line) prefetch_line(p, line);
}

// Tasks per chunk of the tiles' parallel loops (GEMM and convolution), handed out dynamically:
// about eight chunks per thread. With equal static halves every op waited for its slower thread,
// and on a VM the cores do not run at one speed (the host's other guests); the chunks keep runs
// of consecutive tasks together, the locality the task order was chosen for. Time spent waiting
// at the ops' ends (libgomp's share of perf's samples, OMP_WAIT_POLICY=active; Zen 3, 2 threads,
// f16 weights): otter-microbench's three GEMMs and a 3x3 conv 8.8 / 8.4 % -> 4.8 / 4.7 %; a
// 256x256 CLI run 19.3 / 17.5 % -> 13.4 / 12.8 % (the rest is the first step's weight packing;
// denoising steps 2-3 %, one thread 16 % behind the other before). Results are unchanged: each
// task writes its own outputs.
inline int64_t tiles_chunk(int64_t tasks, int threads) {
  return std::max<int64_t>(1, tasks / (8 * std::max(1, threads)));
}

// The micro-kernels: acc[kHalfRows][tile_lanes(format)] (+)= the products of rows[r][k] and the
// panel over k in [k_begin, k_end) (both even). f16: column c's sums in lanes 2c (even k) and
// 2c + 1 (odd k); bf16: column c's in lane c. Rows are 16-bit of even length (tail rows may repeat
// a valid row; their results are ignored); `accumulate` adds to acc instead of overwriting it.
void f16_tile(const uint16_t* const rows[kHalfRows], const uint16_t* panel, int64_t k_begin, int64_t k_end, float* acc,
              bool accumulate, TilePrefetch prefetch = {});
// bf16 computes only the vectors of 16 columns that hold the first `cols` columns (lanes past them
// are left as they were), as f16w_tile does.
void bf16_tile(const uint16_t* const rows[kHalfRows], const uint16_t* panel, int64_t k_begin, int64_t k_end, float* acc,
               bool accumulate, TilePrefetch prefetch = {}, int64_t cols = kHalfCols);
// F16Weights (half_gemm_avx2.cpp): f32 rows, the f16 panel widened as it is read, f32 sums in the
// f16 tile's lanes (2c: even k, 2c + 1: odd k). Only the first `cols` columns are computed (in
// passes of 8; the lanes past them are left as they were): a panel a layer does not fill (the
// VAE's last convolution has 3 outputs, the UNet's 4) costs its used passes only.
void f16w_tile(const float* const rows[kHalfRows], const uint16_t* panel, int64_t k_begin, int64_t k_end, float* acc,
               bool accumulate, TilePrefetch prefetch = {}, int64_t cols = kHalfCols);
inline void half_tile(HalfFormat f, const uint16_t* const rows[kHalfRows], const uint16_t* panel, int64_t k_begin,
                      int64_t k_end, float* acc, bool accumulate, TilePrefetch prefetch = {},
                      int64_t cols = kHalfCols) {  // f16: whole panels
  if (f == HalfFormat::F16)
    f16_tile(rows, panel, k_begin, k_end, acc, accumulate, prefetch);
  else
    bf16_tile(rows, panel, k_begin, k_end, acc, accumulate, prefetch, cols);
}
inline void half_tile(HalfFormat, const float* const rows[kHalfRows], const uint16_t* panel, int64_t k_begin,
                      int64_t k_end, float* acc, bool accumulate, TilePrefetch prefetch = {},
                      int64_t cols = kHalfCols) {
  f16w_tile(rows, panel, k_begin, k_end, acc, accumulate, prefetch, cols);
}

// Column c of a tile row: the f16 (and F16Weights) tile's two lanes added, the bf16 tile's one lane.
inline float tile_column(HalfFormat f, const float* lanes, int64_t c) {
  return f == HalfFormat::BF16 ? lanes[c] : lanes[2 * c] + lanes[2 * c + 1];
}

// out[c] = column c of a tile row (+ bias[c]) (+ residual[c]) for c < cols, for F16Weights' tiles
// (portable; the AVX-512 formats have their own). Their sums are f32: always finite where the
// inputs are, so there is nothing to check.
void write_row_pairs(const float* lanes, const float* bias, const float* residual, int64_t cols, float* out);

}  // namespace otter::cpu

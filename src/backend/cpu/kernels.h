#pragma once
// The CPU backend's own kernels (everything oneDNN does not do). Each takes contiguous F32
// tensors. Hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and chosen at run time
// (OTTER_KERNEL), threaded with OpenMP.
#include <limits>
#include <span>
#include <vector>

#include "backend/backend.h"

#define OTTER_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

// Register tiles are arrays of vectors indexed by compile-time loops; unless those loops are
// unrolled GCC keeps the arrays on the stack (measured: 2.6x slower attention P·V). Put before
// each such loop.
#define OTTER_UNROLL _Pragma("GCC unroll 8")

namespace otter::cpu {

// Below this many elements an OpenMP parallel region costs more than it saves (and threads
// spinning at its barrier hurt when the machine is busy): small ops run on the calling thread.
constexpr int64_t kParallelMinElements = 1 << 15;

Tensor group_norm(const Tensor& x, int groups, const NormWeights& w, bool then_silu);
// Group norm as the affine map it applies to each (sample, channel): y = fma(x, scale, shift)
// (then SiLU as fast_silu), as [2, N, C]: the scales, then the shifts. Fused consumers apply it on
// the fly and get group_norm's exact values. From the caching allocator: it is rebuilt for every
// convolution of every denoising step.
Tensor group_norm_affine(const Tensor& x, int groups, const NormWeights& w);
// The transform's ops one after another (for backends or paths that do not fuse them).
Tensor apply_conv_input_transform(const Tensor& x, const ConvInputTransform& t);
Tensor layer_norm(const Tensor& x, const NormWeights& w);

Tensor activation(const Tensor& x, Activation act);
Tensor geglu(const Tensor& x);
// y[i] = value[i] · GELU(gate[i]) (erf form), i < n: geglu's arithmetic for one row, for the
// fused write-outs that must give its exact values.
void geglu_row(const float* value, const float* gate, float* y, int64_t n);
Tensor softmax(const Tensor& x);

// The operands of attention's two products: F16 where the CPU has AVX-512 FP16 (--precision f16),
// BF16 where it has AVX-512 BF16 (--precision bf16); f32 otherwise.
enum class AttentionProducts { F32, F16, BF16 };
// Both attention kernels start the softmax's running max here and mask causal scores with it.
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal,
                 AttentionProducts products = AttentionProducts::F32);

enum class BinaryOp { Add, Mul };
Tensor binary(const Tensor& a, const Tensor& b, BinaryOp op);
void add_inplace(Tensor& a, const Tensor& b);
// A skip connection must have the op's output shape exactly (no broadcasting); the error names both.
void check_residual(const Tensor& residual, const Shape& output, const char* op);
// y += residual after that check: the unfused form of the ops that take a residual.
void add_residual(Tensor& y, const Tensor& residual, const char* op);
Tensor scale(const Tensor& a, float s);

Tensor concat(std::span<const Tensor> xs, int dim);
std::vector<Tensor> chunk(const Tensor& x, int pieces, int dim);
Tensor batched_transpose(const Tensor& x);
Tensor upsample_nearest2x(const Tensor& x);
Tensor timestep_embedding(const Tensor& timesteps, int dim, bool flip_sin_to_cos, float freq_shift);

}  // namespace otter::cpu

#pragma once
// The AVX-512 attention kernel (queries in the vector lanes); attention() in kernels.h calls it
// when the CPU has AVX-512 and keeps the portable blocked kernel for other CPUs.
#include "backend/cpu/kernels.h"
#include "core/tensor.h"

namespace otter::cpu {

// q[B, Nq, H·D], k and v [B, Nk, H·D], contiguous F32 -> [B, Nq, H·D]. products F16 (needs
// AVX-512 FP16) or BF16 (AVX-512 BF16), only for even head sizes (else f32): Q·Kᵀ and P·V on
// 16-bit operands, the softmax and the running output in f32.
Tensor attention_avx512(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal,
                        int threads, AttentionProducts products = AttentionProducts::F32);

}  // namespace otter::cpu

#pragma once
// The AVX-512 attention kernel (queries in the vector lanes); attention() in kernels.h calls it
// when the CPU has AVX-512 and keeps the portable blocked kernel for other CPUs.
#include "core/tensor.h"

namespace otter::cpu {

// q[B, Nq, H·D], k and v [B, Nk, H·D], contiguous F32 -> [B, Nq, H·D]. f16_products (needs
// AVX-512 FP16; only for even head sizes, else f32): Q·Kᵀ and P·V on f16 operands, the softmax
// and the running output in f32.
Tensor attention_avx512(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal,
                        int threads, bool f16_products = false);

}  // namespace otter::cpu

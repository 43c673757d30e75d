#pragma once
// The AVX2 attention kernel (queries in the vector lanes, f32); attention() in kernels.h calls it
// on CPUs with AVX2 and FMA but no AVX-512.
#include "backend/cpu/kernels.h"
#include "core/tensor.h"

namespace otter::cpu {

// q[B, Nq, H·D], k and v [B, Nk, H·D], contiguous F32 -> [B, Nq, H·D].
Tensor attention_avx2(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal,
                      int threads);

}  // namespace otter::cpu

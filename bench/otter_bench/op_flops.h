#pragma once
// The floating-point operations of the compute-bound ops (a multiply-add counts 2), shared by the
// benchmark's FLOP counter and its op profiler.
#include "backend/backend.h"

namespace otter::bench {

inline double linear_flops(const Tensor& x, const LinearWeights& w) {
  return 2.0 * static_cast<double>(x.numel() / w.weight.dim(1)) * static_cast<double>(w.weight.numel());
}

inline double matmul_flops(const Tensor& a, const Tensor& b) {
  return 2.0 * static_cast<double>(a.numel()) * static_cast<double>(b.dim(2));
}

// From the output: each output value takes in·kh·kw multiply-adds.
inline double conv_flops(const Tensor& y, const Conv2dWeights& w) {
  return 2.0 * static_cast<double>(y.numel()) * static_cast<double>(w.weight.numel() / w.weight.dim(0));
}

// Q·Kᵀ and P·V: 2·2·B·Nq·Nk·(H·D).
inline double attention_flops(const Tensor& q, const Tensor& k) {
  return 4.0 * static_cast<double>(q.numel()) * static_cast<double>(k.dim(1));
}

}  // namespace otter::bench

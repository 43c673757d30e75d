#pragma once
// Convolution and matmul on oneDNN. Primitives are created once per input shape and cached on
// the prepared weights; weights are reordered to the layout oneDNN prefers (and converted to bf16
// when computing in bf16) the first time a layer runs, then reused. Temporary buffers
// (reordered activations, scratchpads) come from otter's caching allocator, so a denoising loop
// stops allocating after its first step.
#include "backend/backend.h"

namespace otter::cpu {

Tensor dnnl_conv2d(const Tensor& x, Conv2dWeights& w, Precision precision);
Tensor dnnl_linear(const Tensor& x, LinearWeights& w, Precision precision);
Tensor dnnl_matmul(const Tensor& a, const Tensor& b, Precision precision);

}  // namespace otter::cpu

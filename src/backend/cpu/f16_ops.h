#pragma once
// Linear layers and convolutions in AVX-512 FP16 arithmetic (--precision f16), on the f16 matmul
// of f16_gemm.h. Weights are converted and packed once, on first use; inputs and outputs stay
// F32 NCHW / [..., C] like every other op.
//
// Convolutions are implicit GEMMs over an f16 NHWC copy of the input: for each output pixel and
// each kernel tap, the micro-kernel's row pointer goes straight to that input pixel's channel
// vector (or to a row of zeros in the padding), and the weights are packed as [tap·C][O] — no
// im2col buffer.
//
// Overflow: f16 holds ±65504. An output that is not finite is recomputed in f32 (oneDNN) and the
// layer stays on f32 from then on, so a network whose activations outgrow f16 still runs correctly.
#include "backend/backend.h"

namespace otter::cpu {

bool f16_ops_available();  // AVX-512 FP16 present

// `residual` (the output's shape, or null) is added as the result is written.
Tensor f16_linear(const Tensor& x, LinearWeights& w, const Tensor* residual = nullptr);
// With a transform, its group norm (+ SiLU) is applied while the input is converted to f16 and
// its 2x upsampling by where each output pixel's tap reads: neither intermediate is materialised.
Tensor f16_conv2d(const Tensor& x, Conv2dWeights& w, const ConvInputTransform* transform = nullptr,
                  const Tensor* residual = nullptr);

}  // namespace otter::cpu

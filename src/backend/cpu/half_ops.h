#pragma once
// Linear layers and convolutions on 16-bit operands (--precision f16 on AVX-512 FP16, bf16 on
// AVX-512 BF16), or on 16-bit weights alone (f16 on AVX2 + F16C: f32 activations and arithmetic),
// on the matmul tiles of half_gemm.h. Weights are converted and packed once, on
// first use; inputs and outputs stay F32 NCHW / [..., C] like every other op.
//
// Convolutions are implicit GEMMs over a 16-bit NHWC copy of the input: for each output pixel and
// each kernel tap, the micro-kernel's row pointer goes straight to that input pixel's channel
// vector (or to a row of zeros in the padding), and the weights are packed as [tap·C][O] — no
// im2col buffer. A convolution's input transform (group norm + SiLU, nearest 2x upsampling) is
// applied while the copy is made and by where each tap reads, and a residual is added as the
// results are written, so none of those intermediates exists.
//
// Overflow (f16 only; bf16 has f32's range): f16 holds ±65504. An output that is not finite is
// recomputed in f32 (oneDNN) and the layer stays on f32 from then on, so a network whose
// activations outgrow f16 still runs correctly.
#include "backend/backend.h"
#include "backend/cpu/half_gemm.h"

namespace otter::cpu {

bool half_ops_available(HalfFormat f);  // AVX-512 FP16 / AVX-512 BF16 present

// `residual` (the output's shape, or null) is added as the result is written.
Tensor half_linear(const Tensor& x, LinearWeights& w, HalfFormat format, const Tensor* residual = nullptr);
// geglu(half_linear(x, w)), the gate applied as the products are written (the same values; the
// [..., 2C] projection is never stored). Runs the two ops where 2C is not a multiple of kHalfCols.
Tensor half_linear_geglu(const Tensor& x, LinearWeights& w, HalfFormat format);
// With a transform, its group norm (+ SiLU) is applied while the input is converted to 16 bits and
// its 2x upsampling by where each output pixel's tap reads: neither intermediate is materialised.
Tensor half_conv2d(const Tensor& x, Conv2dWeights& w, HalfFormat format, const ConvInputTransform* transform = nullptr,
                   const Tensor* residual = nullptr);

}  // namespace otter::cpu

#pragma once
// exp, log and expm1 exactly as PyTorch computes them for float32 CPU tensors.
//
// torch.exp/log/expm1 run through PyTorch's vectorised kernels even for a single element, and
// those call SLEEF's 1-ulp functions (Sleef_expf8_u10, Sleef_logf8_u10, Sleef_expm1f8_u10 on
// AVX2). Their results differ from libm's in the last bit for some inputs, which is enough to
// make DPM-Solver++ and UniPC latents drift from diffusers' by ~1e-7. These are the same
// algorithms written lane by lane in portable C++ (std::fma where the AVX2 build fuses), so the
// bits match on every CPU. Only the argument ranges samplers use matter; special values
// (0, inf, NaN, negative arguments to log) follow SLEEF.
namespace otter::torch_sleef {

float exp(float x);
float log(float x);
float expm1(float x);

}  // namespace otter::torch_sleef

#pragma once
// Gaussian noise bit-identical to PyTorch's CPU generator:
//   torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
// so that a seed gives the same initial latents (and the same ancestral-sampler noise) as
// diffusers run on the CPU. Reproducing it exactly needs three pieces of torch behaviour:
//   * the engine: a standard 32-bit Mersenne Twister seeded with the low 32 bits of the seed;
//   * draws of fewer than 16 values: double-precision Box–Muller from 53-bit uniforms, with the
//     second value of each pair cached in the generator for the next draw;
//   * draws of 16 or more: float32 Box–Muller in blocks of 16 from 24-bit uniforms, with log, sin
//     and cos computed by the Cephes polynomials of PyTorch's AVX2 kernel (avx_mathfun.h), whose
//     roundings differ from libm's in the last bit for ~15 % of the values.
// Everything is written in portable scalar C++ (std::fma where torch's compiled kernel fuses), so
// the bits are the same on every CPU.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "sampling/noise.h"

namespace otter {

// The standard MT19937 (Matsumoto & Nishimura, 1998) with init_genrand seeding.
class Mt19937 {
 public:
  explicit Mt19937(uint32_t seed = 5489u) { seed_with(seed); }
  void seed_with(uint32_t seed);
  uint32_t next();  // one tempered 32-bit output

 private:
  void twist();
  std::array<uint32_t, 624> state_{};
  size_t index_ = 624;
};

class TorchCpuGenerator : public NoiseGenerator {
 public:
  explicit TorchCpuGenerator(uint64_t seed) { manual_seed(seed); }

  // torch.Generator.manual_seed: restarts the engine from the low 32 bits of `seed` (as torch
  // does; 2^32 + 42 gives the same stream as 42) and forgets any cached normal value.
  void manual_seed(uint64_t seed);

  // One torch.randn call of n float32 values (see the file comment for why n matters).
  void randn(float* out, size_t n) override;

  // The raw engine outputs torch's distributions are built from (exposed for tests and for
  // other torch-compatible distributions).
  uint32_t next32() { return engine_.next(); }
  uint64_t next64();  // first 32-bit draw is the high word, as torch's random64()

 private:
  void randn_small(float* out, size_t n);  // n < 16
  void randn_large(float* out, size_t n);  // n >= 16

  Mt19937 engine_;
  std::optional<double> cached_normal_;  // second Box–Muller value of the small path
};

// The float32 Cephes routines of torch's AVX2 kernel, lane by lane, with the kernel's fused
// multiply-adds. Exposed so tests can check them against libm; not meant as general maths.
namespace torch_avx2_math {
float log(float x);                                  // for x > 0 (Box–Muller never passes 0)
void sincos(float x, float* sin_out, float* cos_out);  // accurate for |x| < 8192
}  // namespace torch_avx2_math

}  // namespace otter

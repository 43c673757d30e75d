#pragma once
// Where samplers get Gaussian noise from. The torch-compatible generators implement it so that a
// seed gives diffusers' initial latents and ancestral samplers draw in diffusers' order.
#include <cstddef>

namespace otter {

class NoiseGenerator {
 public:
  virtual ~NoiseGenerator() = default;
  // Fills out[0..n) with standard normal values, exactly as torch.randn of n elements would
  // (one call = one torch.randn call: the draw size changes which algorithm torch uses).
  virtual void randn(float* out, size_t n) = 0;
};

}  // namespace otter

// Tiled VAE decoding against a whole decode on the tiny VAE. Tiling is an approximation (each tile's
// convolutions and mid-block attention see only the tile); the bounds below are set from the measured
// error with margin and stated in the README.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "backend/backend.h"
#include "io/safetensors_source.h"
#include "models/vae_tiling.h"
#include "sampling/torch_cpu_generator.h"
#include "support/compare.h"
#include "support/shared_data.h"

namespace otter {
namespace {

TEST(VaeTiling, CloseToWholeDecode) {
  OTTER_REQUIRE_SHARED(shared);
  const auto dir = shared / "models" / "tiny-sd1" / "vae";
  SafetensorsSource source(dir / "diffusion_pytorch_model.safetensors");
  Weights w(source);
  Vae vae(VaeConfig::from_file(dir / "config.json"), w);
  auto be = make_cpu_backend(Precision::F32);

  TorchCpuGenerator rng(3);
  Tensor latents = Tensor::empty(Shape{1, 4, 32, 32}, DType::F32);
  rng.randn(latents.f32(), static_cast<size_t>(latents.numel()));
  const Tensor whole = vae.decode(*be, latents);

  // One tile covering everything is the whole decode, exactly.
  EXPECT_EQ(testing::max_abs_diff(decode_tiled(vae, *be, latents, {32, 8}), whole), 0.0);

  const Tensor tiled = decode_tiled(vae, *be, latents, {16, 8});
  ASSERT_EQ(tiled.shape(), whole.shape());
  double mean = 0;
  for (int64_t i = 0; i < whole.numel(); ++i) mean += std::fabs(tiled.f32()[i] - whole.f32()[i]);
  mean /= static_cast<double>(whole.numel());
  const double max = testing::max_abs_diff(tiled, whole), range = testing::max_abs(whole);
  std::printf("[ tiling   ] 32x32 latents, tiles 16 overlap 8: mean |d| %.4f, max |d| %.4f, max |whole| %.3f\n", mean,
              max, range);
  // Measured on tiny-sd1 (random weights): mean |d| 0.058 (1% of the output range 5.8), max 1.17.
  // Random weights make the decoder's global mid-block attention mix the whole image, the worst
  // case for tiling; the bounds keep ~1.7x margin over the measurement.
  EXPECT_LE(mean, 0.1);
  EXPECT_LE(max, 2.0);
}

}  // namespace
}  // namespace otter

// bf16 and f16 compute against the f32 reference, on the final 8-bit image: the bundled demo model
// (trained weights, so its activations are those of a real network) generates the same prompts
// and seeds in each precision through the whole pipeline (text encoder, 20 DDIM steps with CFG
// 7.5, VAE). bf16 rounds the operands of every convolution and matmul to 8 significant bits; f16
// rounds them to 11 and sums products in f16 (64 terms per partial sum), attention's two products
// included (norms and the softmax stay f32 in both), and the differences compound over the 20 steps.
//
// Measured on version 2 of the model (8 images, 128x128x3 values each; 2-core Zen 5), with the
// prompts and seeds below:
//   bf16 (otter's 16-bit kernels): max |Δ| = 7 levels, mean 0.147 levels, 99.4% within one level (release).
// The rule this test has always used sets the bounds at 2x the first measured values; they stay at
// 10 / 0.27, set by that rule before the caption-noise stage (measured then 5 / 0.133, and 6 /
// 0.133 in a -O1 ASan/UBSan build), since the new figures are within them.
// The images must be ones the model draws as asked in f32: where it does not, guidance is
// pulling against an undecided prediction and any perturbation moves the picture. Seed 1 of these
// prompts draws a white triangle on a *yellow* background for "a large green triangle on a white
// background" (judge.py), and there bf16 differs from f32 by 15 levels, mean 3.2 (the mottled
// background's blue channel, 6 levels lower on average), against 3-9 / 0.11-0.23 for each of the
// 23 correctly drawn images of seeds 1-6. Seeds 2 and 3 are the first two whose four images are
// all drawn as asked. Also for that reason the prompts name no position and one shape each: until
// 2026-12 the set had "a small yellow star in the top left corner" and "a purple ring and an
// orange square on a black background": the model did not learn positions, so where those shapes
// go is decided by the noise at a knife edge, and the last-bit differences between builds (layer
// norm, GEGLU and GELU compile to different roundings at -O1 and -O3; convolutions, matmuls and
// attention are bit-identical) tipped it: the -O1 build's bf16 image drew a second star (191
// levels off, against 11 in release). That measured a mode flip, not precision.
// Version 1 (64x64, 8x8 latents) measured bf16 max 4 / mean 0.232, f16 max 3 / mean 0.102.
// f16 could not be measured for version 2 here (no AVX-512 FP16): its mean bound stays 0.15 (v1's
// rule) and its max is bf16's, since f16 keeps 11 bits of every operand where bf16 keeps 8 (on
// version 1 its image was the closer one by every figure). Measure it on an FP16 machine and set
// it by the same rule.
// f16 on CPUs without AVX-512 FP16 (f16 weights widened as read, f32 activations and sums; Zen 3,
// release): 12 of the 393216 values differ, each by one level (mean 3.1e-5): bounds 2 levels and
// a mean of 1e-4 (2x, rounded up).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "backend/backend.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "pipeline/default_model.h"
#include "pipeline/txt2img.h"

namespace otter {
namespace {

struct Bound {
  Precision precision;
  int max_levels;
  double mean_levels;
  // f16 on CPUs without AVX-512 FP16: f16 weights widened by an AVX2 tile, f32 activations and
  // arithmetic (half_gemm.h, HalfFormat::F16Weights); the row measures that path, the other f16 row
  // the f16 arithmetic.
  bool f16_weights_only = false;
};
constexpr Bound kBounds[] = {
    {Precision::BF16, 10, 0.27}, {Precision::F16, 10, 0.15}, {Precision::F16, 2, 1e-4, true}};

Tensor generate(Precision precision, const std::vector<std::string>& prompts, uint64_t seed) {
  auto backend = make_cpu_backend(precision);
  auto model = StableDiffusion::load(find_default_model(), *backend);
  Txt2ImgRequest r;
  r.prompts = prompts;
  // The model's native size (128x128 for otter-shapes v2).
  r.width = r.height = model->files().configs.unet.value("sample_size", 64) * model->vae().config().downscale_factor();
  r.steps = 20;
  r.seed = seed;
  r.guidance.schedule = GuidanceSchedule::constant(7.5f);
  return txt2img(*model, r).image;
}

class ReducedPrecisionImage : public ::testing::TestWithParam<Bound> {};

TEST_P(ReducedPrecisionImage, DemoModelImagesStayWithinBound) {
  const Bound bound = GetParam();
  const CpuFeatures& f = cpu_features();
  if (bound.f16_weights_only) {
    if (f.avx512fp16) GTEST_SKIP() << "f16 runs f16 arithmetic on this CPU (AVX-512 FP16): the f16 row measures it";
    if (!cpu_runs_precision(Precision::F16)) GTEST_SKIP() << "no AVX2 with FMA and F16C: no f16 weights path";
  } else {
    if (!f.avx512f) GTEST_SKIP() << "this CPU has no AVX-512: no 16-bit arithmetic";
    if (bound.precision == Precision::F16 && !f.avx512fp16) GTEST_SKIP() << "no AVX-512 FP16";
  }
  const std::vector<std::string> prompts = {"a red circle on a blue background", "a small yellow star on a red background",
                                            "a large green triangle on a white background",
                                            "an orange ring on a black background"};
  int max_levels = 0;
  double sum = 0;
  int64_t count = 0, within_one = 0, differing = 0;
  for (uint64_t seed : {2u, 3u}) {
    const Tensor a = generate(Precision::F32, prompts, seed), b = generate(bound.precision, prompts, seed);
    ASSERT_EQ(a.numel(), b.numel());
    for (int64_t i = 0; i < a.numel(); ++i) {
      const int d = std::abs(int(a.data<uint8_t>()[i]) - int(b.data<uint8_t>()[i]));
      max_levels = std::max(max_levels, d);
      sum += d;
      within_one += d <= 1;
      differing += d != 0;
    }
    count += a.numel();
  }
  const double mean = sum / static_cast<double>(count);
  std::printf("%s%s vs f32, 8-bit image: max %d levels, mean %.4f levels, %.2f%% within one level, %lld of %lld values differ\n",
              precision_name(bound.precision), bound.f16_weights_only ? " (f16 weights, f32 arithmetic)" : "", max_levels, mean,
              100.0 * static_cast<double>(within_one) / static_cast<double>(count), static_cast<long long>(differing),
              static_cast<long long>(count));
  EXPECT_LE(max_levels, bound.max_levels);
  EXPECT_LE(mean, bound.mean_levels);
}

INSTANTIATE_TEST_SUITE_P(Precisions, ReducedPrecisionImage, ::testing::ValuesIn(kBounds),
                         [](const auto& p) {
                           return std::string(precision_name(p.param.precision)) +
                                  (p.param.f16_weights_only ? "_weights" : "");
                         });

}  // namespace
}  // namespace otter

// TorchCpuGenerator against torch.randn outputs recorded in ../shared/golden/rng.safetensors.
// Every value must match bit for bit: a seed must give diffusers' exact initial latents.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sampling/torch_cpu_generator.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

int64_t numel_of(const nlohmann::json& shape) {
  int64_t n = 1;
  for (const auto& d : shape) n *= d.get<int64_t>();
  return n;
}

// Number of values whose bits differ (so -0 vs +0 and NaN payloads count too).
size_t count_bit_mismatches(const float* expected, const std::vector<float>& actual) {
  size_t bad = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::memcmp(&expected[i], &actual[i], sizeof(float)) != 0) ++bad;
  }
  return bad;
}

// The draws one case makes, in order, with the tensor each is compared with.
struct Draw {
  nlohmann::json shape;
  nlohmann::json ref;
};

std::vector<Draw> draws_of(const nlohmann::json& c) {
  std::vector<Draw> draws;
  if (c.at("kind") == "sequence") {
    for (size_t k = 0; k < c.at("shapes").size(); ++k) draws.push_back({c["shapes"][k], c["tensors"][k]});
  } else {
    draws.push_back({c.at("shape"), c.at("tensor")});
  }
  return draws;
}

TEST(TorchCpuGenerator, MatchesEveryGoldenDrawBitExactly) {
  OTTER_REQUIRE_SHARED(shared);
  const testing::Golden golden(shared / "golden" / "rng.json");
  const auto& cases = golden.manifest().at("cases");
  ASSERT_GE(cases.size(), 40u);

  size_t total = 0, mismatches = 0, small_path = 0, large_path = 0, sequences = 0;
  for (const auto& c : cases) {
    const std::string id = c.at("id");
    TorchCpuGenerator gen(c.at("seed").get<uint64_t>());
    if (c.at("kind") == "sequence") ++sequences;
    for (const Draw& draw : draws_of(c)) {
      const Tensor expected = golden.tensor_ref(draw.ref);
      const auto n = static_cast<size_t>(numel_of(draw.shape));
      ASSERT_EQ(static_cast<size_t>(expected.numel()), n) << id;
      std::vector<float> actual(n);
      gen.randn(actual.data(), n);
      const size_t bad = count_bit_mismatches(expected.f32(), actual);
      EXPECT_EQ(bad, 0u) << "case " << id << " draw " << draw.ref.at("name").get<std::string>() << ": " << bad
                         << " of " << n << " values differ";
      total += n;
      mismatches += bad;
      (n < 16 ? small_path : large_path) += n;
    }
  }
  std::printf("rng goldens: %zu cases (%zu sequences), %zu values (%zu small path, %zu large path), %zu bit "
              "mismatches\n",
              cases.size(), sequences, total, small_path, large_path, mismatches);
  EXPECT_EQ(total, 104040u) << "the README says the goldens hold 104 040 values";
  EXPECT_EQ(mismatches, 0u);
}

TEST(TorchCpuGenerator, SeedAbove32BitsUsesLowBits) {
  OTTER_REQUIRE_SHARED(shared);
  const testing::Golden golden(shared / "golden" / "rng.json");
  size_t checked = 0;
  for (const auto& c : golden.manifest().at("cases")) {
    if (!c.contains("equals_seed")) continue;
    const auto n = static_cast<size_t>(numel_of(c.at("shape")));
    std::vector<float> high(n), low(n);
    TorchCpuGenerator(c.at("seed").get<uint64_t>()).randn(high.data(), n);
    TorchCpuGenerator(c.at("equals_seed").get<uint64_t>()).randn(low.data(), n);
    EXPECT_EQ(count_bit_mismatches(low.data(), high), 0u) << c.at("id");
    EXPECT_EQ(count_bit_mismatches(golden.tensor_ref(c.at("tensor")).f32(), low), 0u) << c.at("id");
    ++checked;
  }
  EXPECT_GE(checked, 1u) << "rng.json should hold an equals_seed case";
}

TEST(Mt19937, MatchesStandardLibraryEngine) {
  // std::mt19937 is specified to be exactly MT19937 with init_genrand seeding; the 10000th
  // output from the default seed 5489 is fixed by the C++ standard.
  Mt19937 engine;
  uint32_t value = 0;
  for (int i = 0; i < 10000; ++i) value = engine.next();
  EXPECT_EQ(value, 4123659995u);

  for (uint32_t seed : {0u, 1u, 42u, 0xffffffffu}) {
    Mt19937 ours(seed);
    std::mt19937 reference(seed);
    for (int i = 0; i < 2000; ++i) ASSERT_EQ(ours.next(), reference()) << "seed " << seed << " output " << i;
  }
}

TEST(TorchCpuGenerator, Next64PutsFirstDrawInHighWord) {
  TorchCpuGenerator gen(7);
  std::mt19937 reference(7);
  const uint64_t hi = reference(), lo = reference();
  EXPECT_EQ(gen.next64(), (hi << 32) | lo);
}

TEST(TorchCpuGenerator, ManualSeedRestartsStreamAndDropsCachedValue) {
  TorchCpuGenerator gen(42);
  float first[3], again[3];
  gen.randn(first, 3);  // odd count: leaves the second value of a pair cached
  gen.manual_seed(42);
  gen.randn(again, 3);
  EXPECT_EQ(std::memcmp(first, again, sizeof(first)), 0);
}

TEST(TorchCpuGenerator, SmallDrawsShareTheCachedPairValue) {
  // One draw of 2 and two draws of 1 consume the same Box–Muller pair.
  TorchCpuGenerator a(5), b(5);
  float pair[2], one[2];
  a.randn(pair, 2);
  b.randn(&one[0], 1);
  b.randn(&one[1], 1);
  EXPECT_EQ(std::memcmp(pair, one, sizeof(pair)), 0);
}

TEST(TorchCpuGenerator, LargeDrawIsStandardNormal) {
  TorchCpuGenerator gen(123);
  std::vector<float> v(1 << 16);
  gen.randn(v.data(), v.size());
  double sum = 0, sum_sq = 0;
  for (float x : v) {
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sum_sq += double(x) * x;
  }
  const double mean = sum / v.size(), var = sum_sq / v.size() - mean * mean;
  // 5 standard errors: mean ~ N(0, 1/n), variance ~ N(1, 2/n).
  EXPECT_NEAR(mean, 0.0, 5.0 / std::sqrt(double(v.size())));
  EXPECT_NEAR(var, 1.0, 5.0 * std::sqrt(2.0 / v.size()));
}

TEST(TorchCpuGenerator, ZeroLengthDrawChangesNothing) {
  TorchCpuGenerator a(9), b(9);
  a.randn(nullptr, 0);
  EXPECT_EQ(a.next64(), b.next64());
}

// The Cephes polynomials must stay within a couple of ulp of correctly rounded maths; a wrong
// coefficient or a misplaced fma shows up here before it shows up as a golden mismatch.
float ulp_distance(float a, float b) {
  const double spacing = std::nextafter(std::fabs(b), INFINITY) - std::fabs(b);
  return static_cast<float>(std::fabs(double(a) - double(b)) / spacing);
}

TEST(TorchAvx2Math, LogIsWithinOneUlpOfLibm) {
  float worst = 0;
  // The Box–Muller argument 1 - u lies in [2^-24, 1]; cover it and a wider range.
  for (float x = 0x1p-24f; x < 4.0f; x *= 1.0001f) {
    worst = std::max(worst, ulp_distance(torch_avx2_math::log(x), static_cast<float>(std::log(double(x)))));
  }
  EXPECT_LE(worst, 1.0f);  // measured: 1.0 ulp
  EXPECT_EQ(torch_avx2_math::log(1.0f), 0.0f);
  EXPECT_TRUE(std::isnan(torch_avx2_math::log(0.0f)));
  EXPECT_TRUE(std::isnan(torch_avx2_math::log(-1.0f)));
}

TEST(TorchAvx2Math, SinCosAreAccurateOverTheBoxMullerRange) {
  double worst_sin = 0, worst_cos = 0;
  const double two_pi = 2 * std::numbers::pi;
  for (int i = 0; i <= 200000; ++i) {
    const float x = static_cast<float>(two_pi * i / 200000.0) * (i % 2 ? 1.0f : -1.0f);
    float s, c;
    torch_avx2_math::sincos(x, &s, &c);
    worst_sin = std::max(worst_sin, std::fabs(s - std::sin(double(x))));
    worst_cos = std::max(worst_cos, std::fabs(c - std::cos(double(x))));
  }
  // Absolute error (values are at most 1): within one float epsilon.
  EXPECT_LT(worst_sin, 1.2e-7);  // measured: 6.8e-8
  EXPECT_LT(worst_cos, 1.2e-7);  // measured: 7.7e-8
}

}  // namespace
}  // namespace otter

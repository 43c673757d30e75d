// The test-support golden reader against the real manifests in ../shared/golden.
#include <gtest/gtest.h>

#include "core/error.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter::testing {
namespace {

TEST(GoldenReader, OpensRngManifestAndResolvesTensorRefs) {
  OTTER_REQUIRE_SHARED(shared);
  const Golden g(shared / "golden" / "rng.json");
  EXPECT_EQ(g.manifest()["file"], "rng.safetensors");
  EXPECT_EQ(g.file().size(), g.manifest()["num_tensors"].get<size_t>());

  const nlohmann::json& c = g.case_by_id("seed42/1x4x8x8");
  const Tensor t = g.tensor_ref(c["tensor"]);
  EXPECT_EQ(t.shape(), Shape({1, 4, 8, 8}));
  EXPECT_EQ(t.dtype(), DType::F32);
  // Standard normal draws: finite, of order one, not all zero.
  EXPECT_GT(max_abs(t), 1.0);
  EXPECT_LT(max_abs(t), 6.0);

  // Seed 2^32 + 42 uses only the low 32 bits, so the manifest promises equality with seed 42.
  const Tensor same = g.tensor_ref(g.case_by_id("seed4294967338/1x4x8x8")["tensor"]);
  EXPECT_EQ(max_abs_diff(t, same), 0.0);
}

TEST(GoldenReader, MissingCaseAndShapeMismatchAreErrors) {
  OTTER_REQUIRE_SHARED(shared);
  const Golden g(shared / "golden" / "rng.json");
  EXPECT_THROW(g.case_by_id("no-such-case"), Error);
  nlohmann::json ref = g.case_by_id("seed0/1")["tensor"];
  ref["shape"] = {2};
  EXPECT_THROW(g.tensor_ref(ref), Error);
}

TEST(Compare, MaxAbsDiffAcrossDtypes) {
  const Tensor a = Tensor::full({2, 3}, 1.5f);
  const Tensor b = Tensor::full({2, 3}, -0.25f).to(DType::F64);
  EXPECT_DOUBLE_EQ(max_abs_diff(a, b), 1.75);
  EXPECT_DOUBLE_EQ(max_abs(b), 0.25);
  EXPECT_THROW(max_abs_diff(a, Tensor::full({3, 2}, 0.f)), Error);
}

}  // namespace
}  // namespace otter::testing

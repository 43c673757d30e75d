// The in-register 16x16 transposition (transpose16.h) against its definition: out[j][i] = in[i][j]
// for every element, with distinct values so that any misplaced lane shows.
// GCC 12 warns about its own AVX-512 intrinsic headers (the known false positive on the shuffles
// transpose16.h uses, as in half_gemm.cpp); the intrinsics are used as documented.
#if defined(__GNUC__) && !defined(__clang__)  // GCC's warning names; clang has no such false positive
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <gtest/gtest.h>

#include "backend/cpu/transpose16.h"
#include "core/cpu_features.h"

namespace otter {
namespace {

__attribute__((target("avx512f"))) void transpose_block(const float* in, float* out) {
  __m512 rows[16], cols[16];
  for (int i = 0; i < 16; ++i) rows[i] = _mm512_loadu_ps(in + 16 * i);
  cpu::transpose16x16(rows, cols);
  for (int j = 0; j < 16; ++j) _mm512_storeu_ps(out + 16 * j, cols[j]);
}

TEST(Transpose16, EveryElementLandsAtItsTransposedPlace) {
  if (!cpu_features().avx512f) GTEST_SKIP() << "this CPU has no AVX-512";
  float in[256], out[256];
  for (int i = 0; i < 256; ++i) in[i] = static_cast<float>(i);
  transpose_block(in, out);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) EXPECT_EQ(out[16 * j + i], in[16 * i + j]) << "row " << i << ", column " << j;
}

}  // namespace
}  // namespace otter

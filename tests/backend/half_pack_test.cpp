// The 16-bit panels' layout, element by element, against its definition (half_gemm.h): column n,
// index k at panel n / 64, pair k / 2, column n % 64, slot k % 2; zeros past N, past K and in a
// convolution's padded channels. Checked for every source dtype a checkpoint holds (converted as
// Tensor::to converts), for linear, convolution and GEGLU packing, with ragged tails.
#include <gtest/gtest.h>

#include "backend/cpu/half_gemm.h"
#include "naive_reference.h"

namespace otter {
namespace {

// The packed bits at (n, k), read by the definition.
uint16_t panel_bits(const cpu::HalfPackedWeights& p, int64_t n, int64_t k) {
  const int64_t at = (n / cpu::kHalfCols) * p.k_padded * cpu::kHalfCols + (k / 2) * 2 * cpu::kHalfCols +
                     (n % cpu::kHalfCols) * 2 + (k % 2);
  return p.panels[static_cast<size_t>(at)];
}

// Every element of the panels: `expected(n, k)` inside N x K (the bits of the source element it
// packs, 0 where it packs none), 0 for the padding columns and the odd K's last slot.
template <class Expected>
void expect_panels(const cpu::HalfPackedWeights& p, int64_t n_total, int64_t k_total, Expected expected) {
  ASSERT_EQ(p.n, n_total);
  ASSERT_EQ(p.k, k_total);
  ASSERT_EQ(p.k_padded, (k_total + 1) / 2 * 2);
  const int64_t panels = (n_total + cpu::kHalfCols - 1) / cpu::kHalfCols;
  ASSERT_EQ(static_cast<int64_t>(p.panels.size()), panels * p.k_padded * cpu::kHalfCols);
  int64_t wrong = 0;
  for (int64_t n = 0; n < panels * cpu::kHalfCols; ++n)
    for (int64_t k = 0; k < p.k_padded; ++k) {
      const uint16_t want = n < n_total && k < k_total ? expected(n, k) : 0;
      if (panel_bits(p, n, k) != want && ++wrong <= 5)
        ADD_FAILURE() << "n " << n << " k " << k << ": packed " << panel_bits(p, n, k) << ", expected " << want;
    }
  EXPECT_EQ(wrong, 0);
}

constexpr cpu::HalfFormat kFormats[] = {cpu::HalfFormat::F16, cpu::HalfFormat::BF16, cpu::HalfFormat::F16Weights};
constexpr DType kSources[] = {DType::F32, DType::F16, DType::BF16};

TEST(HalfPack, LinearWeightsFromEverySourceType) {
  // 150 rows: two whole panels and a ragged third; K odd (the last pair half zero), and K large
  // enough that the packing runs on several threads.
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{150, 37}, {150, 7001}})
    for (cpu::HalfFormat format : kFormats)
      for (DType source : kSources) {
        SCOPED_TRACE(std::string(cpu::half_format_name(format)) + " from " + std::string(dtype_name(source)) + ", K " +
                     std::to_string(k));
        const Tensor w = testing::random_tensor(Shape{n, k}, 1, -3.0f, 3.0f).to(source);
        const Tensor want = w.to(cpu::half_dtype(format));
        const cpu::HalfPackedWeights p = cpu::pack_half_weights(w, format);
        EXPECT_EQ(p.format, format);
        EXPECT_FALSE(p.geglu);
        expect_panels(p, n, k, [&](int64_t i, int64_t j) { return want.data<uint16_t>()[i * k + j]; });
      }
}

TEST(HalfPack, ViewsArePackedAsTheirValues) {
  // A transposed view ([K, N] read as [N, K]) packs as its contiguous copy does.
  const Tensor base = testing::random_tensor(Shape{37, 70}, 4, -3.0f, 3.0f).to(DType::F16);
  const Tensor view = base.permute({1, 0});
  ASSERT_FALSE(view.is_contiguous());
  const Tensor want = view.contiguous();
  const cpu::HalfPackedWeights p = cpu::pack_half_weights(view, cpu::HalfFormat::F16);
  expect_panels(p, 70, 37, [&](int64_t i, int64_t j) { return want.data<uint16_t>()[i * 37 + j]; });
}

TEST(HalfPack, ConvolutionWeightsReadTapByTap) {
  // [O, C, kh, kw] with k = tap · Cp + c: odd C padded to Cp (zeros at c = C..Cp-1), 1x1 and 3x3.
  for (const auto& [c, cp, side] : {std::tuple<int64_t, int64_t, int64_t>{5, 6, 3}, {5, 8, 1}, {320, 320, 3}})
    for (cpu::HalfFormat format : kFormats)
      for (DType source : kSources) {
        SCOPED_TRACE(std::string(cpu::half_format_name(format)) + " from " + std::string(dtype_name(source)) + ", C " +
                     std::to_string(c) + " Cp " + std::to_string(cp) + " " + std::to_string(side) + "x" +
                     std::to_string(side));
        const int64_t o = 70, taps = side * side;
        const Tensor w = testing::random_tensor(Shape{o, c, side, side}, 2, -3.0f, 3.0f).to(source);
        const Tensor want = w.to(cpu::half_dtype(format));
        const cpu::HalfPackedWeights p = cpu::pack_half_conv_weights(w, cp, format);
        expect_panels(p, o, taps * cp, [&](int64_t i, int64_t k) -> uint16_t {
          const int64_t tap = k / cp, ch = k % cp;
          return ch < c ? want.data<uint16_t>()[(i * c + ch) * taps + tap] : 0;
        });
      }
}

TEST(HalfPack, GegluWeightsPairValuesWithTheirGates) {
  // [2C, K], C = 96: packed row r of panel b holds value rows b·32.. for r % 64 < 32, their gates
  // (rows C + b·32..) after them; the bias reordered the same way.
  const int64_t c = 96, n = 2 * c, k = 33;
  std::vector<float> bias(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) bias[static_cast<size_t>(i)] = static_cast<float>(i);
  for (cpu::HalfFormat format : kFormats) {
    SCOPED_TRACE(cpu::half_format_name(format));
    const Tensor w = testing::random_tensor(Shape{n, k}, 3, -3.0f, 3.0f).to(DType::F16);
    const Tensor want = w.to(cpu::half_dtype(format));
    std::vector<float> packed_bias;
    const cpu::HalfPackedWeights p = cpu::pack_half_weights_geglu(w, bias, format, packed_bias);
    EXPECT_TRUE(p.geglu);
    auto source_row = [&](int64_t r) {
      const int64_t block = r / cpu::kHalfCols, j = r % cpu::kHalfCols;
      return j < cpu::kGegluCols ? block * cpu::kGegluCols + j : c + block * cpu::kGegluCols + j - cpu::kGegluCols;
    };
    ASSERT_EQ(static_cast<int64_t>(packed_bias.size()), n);
    for (int64_t r = 0; r < n; ++r) EXPECT_EQ(packed_bias[static_cast<size_t>(r)], static_cast<float>(source_row(r)));
    expect_panels(p, n, k, [&](int64_t r, int64_t j) { return want.data<uint16_t>()[source_row(r) * k + j]; });
  }
}

}  // namespace
}  // namespace otter

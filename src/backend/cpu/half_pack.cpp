// Weights packed into the 16-bit tiles' panels (half_gemm.h), once per layer on the first step:
// SD 1.5's 860M UNet parameters, 0.86 GB of panels in 16 bits.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/half_gemm.h"
#include "core/error.h"
#include "core/half.h"

namespace otter::cpu {
namespace {

// Columns per packing task: one cache line of a panel's pair row (16 columns x 2 k x 16 bits), so
// every line of the panels is written whole, once, in order. Writing a whole 64-column row of W
// at a time touched each line 16 times, a K stride apart, and a 3x3 convolution's panel (up to
// 1.5 MB) did not stay in L2 between those visits.
constexpr int64_t kLineCols = 16;

// Packs the matrix whose row n is row row_of(n) of `w` ([rows, C · taps] as it lies in memory,
// any float dtype) into panels of N = `n` columns: k = t · cp + c reads the row's element
// c · taps + t, for c < C; k with c in [C, cp) and past the last pair's K stay 0. A linear
// weight is taps = 1, cp = C = K; a convolution's [O, C, kh, kw] is read as it lies, with no
// reordered copy. Rows already in the 16-bit type are read in place (a checkpoint's f16 weights
// for f16 tiles); others are converted a few rows at a time by the thread that packs them, as
// Tensor::to would (the same bits), so no whole-tensor copy is made, faulted in, or converted on
// one thread.
template <class RowOf>
HalfPackedWeights pack_rows(const Tensor& w_in, int64_t n, int64_t C, int64_t cp, int64_t taps, HalfFormat format,
                            RowOf row_of) {
  const Tensor w = w_in.is_contiguous() ? w_in : w_in.contiguous();  // a view (a slice, a transpose) copied once
  HalfPackedWeights p;
  p.format = format;
  p.n = n;
  p.k = taps * cp;
  p.k_padded = (p.k + 1) / 2 * 2;
  const int64_t row_len = C * taps, pairs = p.k_padded / 2;
  const DType want = half_dtype(format);
  const bool in_place = w.dtype() == want;
  const size_t element = dtype_size(w.dtype());
  const auto* base = static_cast<const unsigned char*>(w.raw());

  // Where each k reads in its row; -1 for the zeros.
  std::vector<int64_t> offset(static_cast<size_t>(p.k_padded), -1);
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t c = 0; c < C; ++c) offset[static_cast<size_t>(t * cp + c)] = c * taps + t;

  const int64_t panels = (n + kHalfCols - 1) / kHalfCols, lines = kHalfCols / kLineCols;
  p.panels.resize(static_cast<size_t>(panels * p.k_padded * kHalfCols));  // uninitialised: every element written below
#pragma omp parallel if (n * p.k > (1 << 20))
  {
    std::vector<uint16_t> converted(in_place ? 0 : static_cast<size_t>(kLineCols * row_len));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < panels * lines; ++task) {
      const int64_t panel = task / lines, line = task % lines, row0 = panel * kHalfCols + line * kLineCols;
      const int64_t rows = std::clamp<int64_t>(n - row0, 0, kLineCols);
      const uint16_t* src[kLineCols];
      for (int64_t j = 0; j < rows; ++j) {
        const unsigned char* row = base + static_cast<size_t>(row_of(row0 + j) * row_len) * element;
        if (in_place) {
          src[j] = reinterpret_cast<const uint16_t*>(row);
        } else {
          uint16_t* out = converted.data() + j * row_len;
          convert(row, w.dtype(), out, want, static_cast<size_t>(row_len));
          src[j] = out;
        }
      }
      uint16_t* dst = p.panels.data() + panel * p.k_padded * kHalfCols + line * kLineCols * 2;
      for (int64_t pair = 0; pair < pairs; ++pair) {
        uint16_t out[kLineCols * 2] = {};
        const int64_t o0 = offset[static_cast<size_t>(2 * pair)], o1 = offset[static_cast<size_t>(2 * pair + 1)];
        if (rows == kLineCols && o0 >= 0 && o1 >= 0) {
          for (int64_t j = 0; j < kLineCols; ++j) {
            out[2 * j] = src[j][o0];
            out[2 * j + 1] = src[j][o1];
          }
        } else {
          for (int64_t j = 0; j < rows; ++j) {
            if (o0 >= 0) out[2 * j] = src[j][o0];
            if (o1 >= 0) out[2 * j + 1] = src[j][o1];
          }
        }
        std::memcpy(dst + pair * 2 * kHalfCols, out, sizeof(out));
      }
    }
  }
  return p;
}

}  // namespace

HalfPackedWeights pack_half_weights(const Tensor& w, HalfFormat format) {
  OTTER_CHECK(w.rank() == 2, "pack_half_weights needs [N, K], got ", w.describe());
  const int64_t K = w.dim(1);
  return pack_rows(w, w.dim(0), K, K, 1, format, [](int64_t n) { return n; });
}

HalfPackedWeights pack_half_conv_weights(const Tensor& w, int64_t cp, HalfFormat format) {
  OTTER_CHECK(w.rank() == 4 && cp >= w.dim(1), "pack_half_conv_weights needs [O, C, kh, kw] and Cp >= C, got ",
              w.describe(), " and Cp ", cp);
  return pack_rows(w, w.dim(0), w.dim(1), cp, w.dim(2) * w.dim(3), format, [](int64_t o) { return o; });
}

HalfPackedWeights pack_half_weights_geglu(const Tensor& w, const std::vector<float>& bias, HalfFormat format,
                                          std::vector<float>& packed_bias) {
  OTTER_CHECK(w.rank() == 2 && w.dim(0) % (2 * kGegluCols) == 0, "a fused GEGLU needs [2C, K] weights with C a ",
              "multiple of ", kGegluCols, ", got ", w.describe());
  const int64_t N = w.dim(0), C = N / 2, K = w.dim(1);
  // Packed row r: block r / kHalfCols, its first kGegluCols rows values, then their gates.
  auto source_row = [&](int64_t r) {
    const int64_t block = r / kHalfCols, j = r % kHalfCols;
    return j < kGegluCols ? block * kGegluCols + j : C + block * kGegluCols + (j - kGegluCols);
  };
  packed_bias.clear();
  if (!bias.empty())
    for (int64_t r = 0; r < N; ++r) packed_bias.push_back(bias[static_cast<size_t>(source_row(r))]);
  HalfPackedWeights p = pack_rows(w, N, K, K, 1, format, source_row);
  p.geglu = true;
  return p;
}

}  // namespace otter::cpu

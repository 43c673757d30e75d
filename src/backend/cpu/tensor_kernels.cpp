// Elementwise arithmetic with broadcasting, and the shape ops: concat, chunk, 2x upsampling,
// timestep embedding.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/kernels.h"
#include "core/error.h"

namespace otter::cpu {
namespace {

OTTER_KERNEL void add_run(const float* a, const float* b, float* y, int64_t n, int64_t b_step) {
  if (b_step) {
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
  } else {
    const float s = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] + s;
  }
}
OTTER_KERNEL void mul_run(const float* a, const float* b, float* y, int64_t n, int64_t b_step) {
  if (b_step) {
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
  } else {
    const float s = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] * s;
  }
}

// Broadcast strides of `t` against the output shape (0 where t has size 1 or no such dim).
std::array<int64_t, kMaxDims> broadcast_strides(const Tensor& t, const Shape& out) {
  std::array<int64_t, kMaxDims> s{};
  const int offset = out.rank() - t.rank();
  const auto contiguous = contiguous_strides(t.shape());
  for (int i = 0; i < t.rank(); ++i)
    s[static_cast<size_t>(i + offset)] = t.dim(i) == 1 ? 0 : contiguous[static_cast<size_t>(i)];
  return s;
}

Shape broadcast_shape(const Tensor& a, const Tensor& b) {
  const int rank = std::max(a.rank(), b.rank());
  std::vector<int64_t> dims(static_cast<size_t>(rank));
  for (int i = 0; i < rank; ++i) {
    const int ia = i - (rank - a.rank()), ib = i - (rank - b.rank());
    const int64_t da = ia >= 0 ? a.dim(ia) : 1, db = ib >= 0 ? b.dim(ib) : 1;
    OTTER_CHECK(da == db || da == 1 || db == 1, "cannot broadcast ", a.describe(), " with ", b.describe());
    dims[static_cast<size_t>(i)] = std::max(da, db);
  }
  return Shape(dims);
}

// Runs op over the output in rows of the last dimension; a and b are read through broadcast strides.
template <class RunFn>
void broadcast_apply(const Tensor& a, const Tensor& b, float* out, const Shape& shape, RunFn&& run) {
  const auto sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
  const int r = shape.rank();
  const int64_t last = r ? shape[r - 1] : 1;
  const int64_t rows = last ? shape.numel() / last : 0;
  const float* pa = a.f32();
  const float* pb = b.f32();
  const int64_t step_a = r ? sa[static_cast<size_t>(r - 1)] : 0;
  const int64_t step_b = r ? sb[static_cast<size_t>(r - 1)] : 0;
  const bool a_full = step_a == 1 || last == 1;
#pragma omp parallel for schedule(static) if (rows > 1 && shape.numel() >= kParallelMinElements)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t rem = row, off_a = 0, off_b = 0;
    for (int i = r - 2; i >= 0; --i) {
      const int64_t idx = rem % shape[i];
      rem /= shape[i];
      off_a += idx * sa[static_cast<size_t>(i)];
      off_b += idx * sb[static_cast<size_t>(i)];
    }
    if (a_full) {
      run(pa + off_a, pb + off_b, out + row * last, last, last == 1 ? 1 : step_b);
    } else {  // a broadcast along the last dim: swap roles (both ops commute)
      run(pb + off_b, pa + off_a, out + row * last, last, step_a);
    }
  }
}

}  // namespace

Tensor binary(const Tensor& a_in, const Tensor& b_in, BinaryOp op) {
  const Tensor a = a_in.contiguous().to(DType::F32), b = b_in.contiguous().to(DType::F32);
  const Shape shape = broadcast_shape(a, b);
  Tensor y = Tensor::empty(shape, DType::F32);
  if (op == BinaryOp::Add)
    broadcast_apply(a, b, y.f32(), shape, add_run);
  else
    broadcast_apply(a, b, y.f32(), shape, mul_run);
  return y;
}

void add_inplace(Tensor& a, const Tensor& b_in) {
  OTTER_CHECK(a.is_contiguous() && a.dtype() == DType::F32, "add_inplace needs a contiguous F32 target, got ",
              a.describe());
  const Tensor b = b_in.contiguous().to(DType::F32);
  OTTER_CHECK(broadcast_shape(a, b) == a.shape(), "add_inplace: ", b.describe(), " does not broadcast to ",
              a.describe());
  broadcast_apply(a, b, a.f32(), a.shape(), add_run);
}

void check_residual(const Tensor& residual, const Shape& output, const char* op) {
  OTTER_CHECK(residual.shape() == output, op, ": residual ", residual.describe(), " does not match the output shape ",
              output.str());
}

void add_residual(Tensor& y, const Tensor& residual, const char* op) {
  check_residual(residual, y.shape(), op);
  add_inplace(y, residual);
}

OTTER_KERNEL static void scale_run(const float* x, float* y, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s;
}

Tensor scale(const Tensor& a, float s) {
  const Tensor x = a.contiguous();
  Tensor y = Tensor::empty(a.shape(), DType::F32);
  scale_run(x.f32(), y.f32(), x.numel(), s);
  return y;
}

Tensor concat(std::span<const Tensor> xs, int dim) {
  OTTER_CHECK(!xs.empty(), "concat of nothing");
  const int rank = xs[0].rank();
  if (dim < 0) dim += rank;
  std::vector<int64_t> shape = xs[0].shape().to_vector();
  shape[static_cast<size_t>(dim)] = 0;
  for (const Tensor& x : xs) {
    OTTER_CHECK(x.rank() == rank && x.dtype() == xs[0].dtype(), "concat: ", x.describe(), " vs ", xs[0].describe());
    for (int i = 0; i < rank; ++i)
      OTTER_CHECK(i == dim || x.dim(i) == xs[0].dim(i), "concat along dim ", dim, ": ", x.describe(), " vs ",
                  xs[0].describe());
    shape[static_cast<size_t>(dim)] += x.dim(dim);
  }
  Tensor y = Tensor::empty(Shape(shape), xs[0].dtype());
  int64_t outer = 1;
  for (int i = 0; i < dim; ++i) outer *= shape[static_cast<size_t>(i)];
  const size_t esize = dtype_size(y.dtype());
  const int64_t out_row = y.numel() / std::max<int64_t>(outer, 1);
  char* dst = static_cast<char*>(y.raw());
  int64_t col = 0;
  for (const Tensor& x_in : xs) {
    const Tensor x = x_in.contiguous();
    const int64_t row = x.numel() / std::max<int64_t>(outer, 1);
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(dst + static_cast<size_t>(o * out_row + col) * esize,
                  static_cast<const char*>(x.raw()) + static_cast<size_t>(o * row) * esize,
                  static_cast<size_t>(row) * esize);
    col += row;
  }
  return y;
}

std::vector<Tensor> chunk(const Tensor& x, int pieces, int dim) {
  if (dim < 0) dim += x.rank();
  OTTER_CHECK(pieces > 0 && x.dim(dim) % pieces == 0, "chunk: dim ", dim, " of ", x.describe(),
              " does not split into ", pieces, " equal pieces");
  const int64_t size = x.dim(dim) / pieces;
  std::vector<Tensor> out;
  for (int i = 0; i < pieces; ++i) out.push_back(x.slice(dim, i * size, (i + 1) * size));
  return out;
}

Tensor batched_transpose(const Tensor& x_in) {
  OTTER_CHECK(x_in.rank() == 3, "batched_transpose needs [N, A, B], got ", x_in.describe());
  const Tensor x = x_in.to(DType::F32).contiguous();
  const int64_t N = x.dim(0), A = x.dim(1), B = x.dim(2);
  Tensor y = Tensor::empty(Shape{N, B, A}, DType::F32);
  const float* in = x.f32();
  float* out = y.f32();
  // 16x16 blocks: a block's 16 input rows and 16 output rows each stay in a few cache lines
  // (element by element through a permuted view, each step was a strided index computation and a
  // 4-byte copy, on one thread).
  constexpr int64_t kBlock = 16;
  const int64_t a_blocks = (A + kBlock - 1) / kBlock, b_blocks = (B + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ab = 0; ab < a_blocks; ++ab) {
      const float* src = in + n * A * B;
      float* dst = out + n * A * B;
      const int64_t a0 = ab * kBlock, a1 = std::min(A, a0 + kBlock);
      for (int64_t bb = 0; bb < b_blocks; ++bb) {
        const int64_t b0 = bb * kBlock, b1 = std::min(B, b0 + kBlock);
        for (int64_t b = b0; b < b1; ++b)
          for (int64_t a = a0; a < a1; ++a) dst[b * A + a] = src[a * B + b];
      }
    }
  return y;
}

Tensor upsample_nearest2x(const Tensor& x_in) {
  OTTER_CHECK(x_in.rank() == 4, "upsample_nearest2x needs [N, C, H, W], got ", x_in.describe());
  const Tensor x = x_in.contiguous();
  const int64_t NC = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor y = Tensor::empty(Shape{x.dim(0), x.dim(1), 2 * H, 2 * W}, DType::F32);
  const float* in = x.f32();
  float* out = y.f32();
#pragma omp parallel for schedule(static) if (y.numel() >= kParallelMinElements)
  for (int64_t p = 0; p < NC; ++p) {
    for (int64_t h = 0; h < H; ++h) {
      const float* src = in + (p * H + h) * W;
      float* row = out + (p * 2 * H + 2 * h) * 2 * W;
      for (int64_t w = 0; w < W; ++w) row[2 * w] = row[2 * w + 1] = src[w];
      std::memcpy(row + 2 * W, row, static_cast<size_t>(2 * W) * sizeof(float));
    }
  }
  return y;
}

Tensor timestep_embedding(const Tensor& timesteps, int dim, bool flip_sin_to_cos, float freq_shift) {
  const Tensor t = timesteps.to(DType::F32).contiguous();
  const int64_t B = t.numel();
  const int half = dim / 2;
  Tensor y = Tensor::zeros(Shape{B, dim}, DType::F32);
  // diffusers: exponent = -ln(10000) * arange(half) / (half - freq_shift), all float32.
  std::vector<float> freqs(static_cast<size_t>(half));
  const float neg_log_period = static_cast<float>(-std::log(10000.0));
  for (int i = 0; i < half; ++i) {
    const float exponent = (neg_log_period * static_cast<float>(i)) / (static_cast<float>(half) - freq_shift);
    freqs[static_cast<size_t>(i)] = std::exp(exponent);
  }
  for (int64_t b = 0; b < B; ++b) {
    float* row = y.f32() + b * dim;
    for (int i = 0; i < half; ++i) {
      const float arg = t.f32()[b] * freqs[static_cast<size_t>(i)];
      const float s = std::sin(arg), c = std::cos(arg);
      row[i] = flip_sin_to_cos ? c : s;
      row[half + i] = flip_sin_to_cos ? s : c;
    }
  }
  return y;
}

}  // namespace otter::cpu

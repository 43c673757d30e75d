#include "backend/cpu/dnnl_ops.h"

#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

#include "core/error.h"
#include "core/half.h"

namespace otter::cpu {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Dnnl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  static Dnnl& get() {
    static Dnnl instance;
    return instance;
  }
};

dt compute_type(Precision p) { return p == Precision::BF16 ? dt::bf16 : dt::f32; }

// A byte buffer from otter's allocator, viewed as a oneDNN memory of descriptor md.
struct Buffer {
  Tensor storage;
  memory mem;
};
Buffer make_buffer(const memory::desc& md) {
  Buffer b;
  b.storage = Tensor::empty(Shape{static_cast<int64_t>(std::max<size_t>(md.get_size(), 1))}, DType::U8);
  b.mem = memory(md, Dnnl::get().engine, b.storage.raw());
  return b;
}

void reorder(const memory& from, const memory& to) {
  dnnl::reorder(from, to).execute(Dnnl::get().stream, const_cast<memory&>(from), const_cast<memory&>(to));
}

dnnl::primitive_attr user_scratchpad_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// Weights (and bias) as the checkpoint stores them, viewed as F32 (converted from f16/bf16 once).
Tensor as_f32(const Tensor& t) { return t.to(DType::F32).contiguous(); }

// A weight reordered into the primitive's layout (`to`), from an F32 copy that lives only for the
// call: it comes from a private allocator, so the copy's memory goes back to the system instead
// of staying in the global allocator's cache (3.4 GB for SD 1.5's UNet). The checkpoint's pages
// are dropped from the resident set afterwards: the backend's copy is all that is needed now.
void reorder_weight(const Tensor& weight, const memory::desc& plain_md, const memory& to) {
  Allocator temporary;
  const Tensor wf = weight.to(DType::F32, temporary);
  memory plain(plain_md, Dnnl::get().engine, wf.raw());
  reorder(plain, to);
  weight.release_file_pages();
}

// ---- convolution ----

struct ConvKey {
  int64_t n, h, w;
  auto operator<=>(const ConvKey&) const = default;
};

struct ConvPlan {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
};

struct PreparedConv {
  Precision precision;
  Tensor bias_f32;
  std::map<memory::desc, Buffer, bool (*)(const memory::desc&, const memory::desc&)> weights{
      [](const memory::desc& a, const memory::desc& b) {
        return std::memcmp(&a.data, &b.data, sizeof(a.data)) < 0;
      }};
  std::map<ConvKey, ConvPlan> plans;
  std::mutex mutex;
};

}  // namespace

Tensor dnnl_conv2d(const Tensor& x_in, Conv2dWeights& w, Precision precision) {
  OTTER_CHECK(x_in.rank() == 4, "conv2d needs [N, C, H, W], got ", x_in.describe());
  OTTER_CHECK(w.weight.rank() == 4, "conv2d weight must be [O, I, kh, kw], got ", w.weight.describe());
  const int64_t N = x_in.dim(0), C = x_in.dim(1), H = x_in.dim(2), W = x_in.dim(3);
  const int64_t O = w.weight.dim(0), kh = w.weight.dim(2), kw = w.weight.dim(3);
  OTTER_CHECK(w.weight.dim(1) == C, "conv2d: input has ", C, " channels, weight expects ", w.weight.dim(1), " (",
              w.weight.describe(), ")");
  const int64_t OH = (H + w.pad_top + w.pad_bottom - kh) / w.stride + 1;
  const int64_t OW = (W + w.pad_left + w.pad_right - kw) / w.stride + 1;
  auto& dn = Dnnl::get();

  std::shared_ptr<void>& slot = prepared_slot(w).dnnl;
  if (!slot || static_cast<PreparedConv*>(slot.get())->precision != precision) {
    auto p = std::make_shared<PreparedConv>();
    p->precision = precision;
    if (w.bias.defined()) {
      p->bias_f32 = as_f32(w.bias);
      w.bias.release_file_pages();
    }
    slot = p;
  }
  auto& prep = *static_cast<PreparedConv*>(slot.get());
  std::lock_guard<std::mutex> lock(prep.mutex);

  const ConvKey key{N, H, W};
  auto it = prep.plans.find(key);
  if (it == prep.plans.end()) {
    const dt ct = compute_type(precision);
    memory::desc src_md({N, C, H, W}, ct, tag::any);
    memory::desc wei_md({O, C, kh, kw}, ct, tag::any);
    memory::desc bias_md({O}, dt::f32, tag::a);
    memory::desc dst_md({N, O, OH, OW}, dt::f32, tag::any);
    const memory::dims strides{w.stride, w.stride};
    const memory::dims pad_l{w.pad_top, w.pad_left}, pad_r{w.pad_bottom, w.pad_right};
    auto desc = w.bias.defined()
                    ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                      dnnl::algorithm::convolution_direct, src_md, wei_md, bias_md,
                                                      dst_md, strides, pad_l, pad_r)
                    : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                      dnnl::algorithm::convolution_direct, src_md, wei_md, dst_md,
                                                      strides, pad_l, pad_r);
    dnnl::convolution_forward::primitive_desc pd(desc, user_scratchpad_attr(), dn.engine);
    it = prep.plans.emplace(key, ConvPlan{pd, dnnl::convolution_forward(pd)}).first;
  }
  const auto& pd = it->second.pd;

  // Weights in the primitive's layout, made once per layout.
  auto wit = prep.weights.find(pd.weights_desc());
  if (wit == prep.weights.end()) {
    Buffer buf = make_buffer(pd.weights_desc());
    reorder_weight(w.weight, {{O, C, kh, kw}, dt::f32, tag::oihw}, buf.mem);
    wit = prep.weights.emplace(pd.weights_desc(), std::move(buf)).first;
  }

  const Tensor x = x_in.to(DType::F32).contiguous();
  memory x_plain({{N, C, H, W}, dt::f32, tag::nchw}, dn.engine, x.raw());
  Buffer src_buf;
  memory src = x_plain;
  if (pd.src_desc() != x_plain.get_desc()) {
    src_buf = make_buffer(pd.src_desc());
    reorder(x_plain, src_buf.mem);
    src = src_buf.mem;
  }
  Tensor y = Tensor::empty(Shape{N, O, OH, OW}, DType::F32);
  memory y_plain({{N, O, OH, OW}, dt::f32, tag::nchw}, dn.engine, y.raw());
  Buffer dst_buf;
  memory dst = y_plain;
  if (pd.dst_desc() != y_plain.get_desc()) {
    dst_buf = make_buffer(pd.dst_desc());
    dst = dst_buf.mem;
  }
  Buffer scratch = make_buffer(pd.scratchpad_desc());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src},
                                       {DNNL_ARG_WEIGHTS, wit->second.mem},
                                       {DNNL_ARG_DST, dst},
                                       {DNNL_ARG_SCRATCHPAD, scratch.mem}};
  if (w.bias.defined())
    args.emplace(DNNL_ARG_BIAS, memory({{O}, dt::f32, tag::a}, dn.engine, prep.bias_f32.raw()));
  it->second.prim.execute(dn.stream, args);
  if (dst != y_plain) reorder(dst, y_plain);
  dn.stream.wait();
  return y;
}

// ---- matmul ----

namespace {

struct MatmulPlan {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

struct PreparedLinear {
  Precision precision;
  Tensor bias_f32;
  Buffer weights;  // [K, N] in the layout the first primitive chose
  memory::desc weights_md;
  std::map<int64_t, MatmulPlan> plans;  // by M (rows)
  std::mutex mutex;
};

// Converts activations to the compute type (bf16 rounds here; f32 passes through).
Tensor to_compute(const Tensor& x, Precision p) {
  return x.to(p == Precision::BF16 ? DType::BF16 : DType::F32).contiguous();
}

}  // namespace

// A row's result must not depend on the rows that share its call: CFG's batched and split passes,
// continuous batching and images run in turns give each image the same bits only then. oneDNN's
// f32 GEMM does not promise it: on AVX2 (no brgemm) it picks by M whether threads split the sum
// over K (measured: 77x768->320 at M = 77 and at M = 231 differ in the last bits) and runs M = 1
// as a matrix-vector product with its own order. So the matmul runs once per image (the leading
// dimension of a [B, tokens, C] input): the same M, the same kernel, the same bits, whatever the
// batch. A [rows, C] input is one matrix, one call (the UNet embeds each distinct timestep's
// [1, C] row alone: linear_per_distinct_row).
Tensor dnnl_linear(const Tensor& x_in, LinearWeights& w, Precision precision) {
  OTTER_CHECK(w.weight.rank() == 2, "linear weight must be [out, in], got ", w.weight.describe());
  const int64_t N = w.weight.dim(0), K = w.weight.dim(1);
  OTTER_CHECK(x_in.rank() >= 1 && x_in.dim(-1) == K, "linear: input ", x_in.describe(), " does not end in ", K,
              " features (weight ", w.weight.describe(), ")");
  const int64_t rows = x_in.numel() / K;
  const int64_t images = x_in.rank() >= 3 ? x_in.dim(0) : 1;
  const int64_t M = images > 0 ? rows / images : 0;  // rows per call
  auto& dn = Dnnl::get();
  const dt ct = compute_type(precision);

  std::shared_ptr<void>& slot = prepared_slot(w).dnnl;
  if (!slot || static_cast<PreparedLinear*>(slot.get())->precision != precision) {
    auto p = std::make_shared<PreparedLinear>();
    p->precision = precision;
    if (w.bias.defined()) {
      p->bias_f32 = as_f32(w.bias);
      w.bias.release_file_pages();
    }
    // Weights layout chosen once, independent of M, so the reorder happens once at load.
    p->weights_md = memory::desc({K, N}, ct, tag::any);
    slot = p;
  }
  auto& prep = *static_cast<PreparedLinear*>(slot.get());
  std::lock_guard<std::mutex> lock(prep.mutex);

  std::vector<int64_t> out_shape = x_in.shape().to_vector();
  out_shape.back() = N;
  Tensor y = Tensor::empty(Shape(out_shape), DType::F32);
  if (rows == 0) return y;
  auto it = prep.plans.find(M);
  if (it == prep.plans.end()) {
    memory::desc src_md({M, K}, ct, tag::ab);
    memory::desc wei_md = prep.weights.storage.defined() ? prep.weights_md : memory::desc({K, N}, ct, tag::any);
    memory::desc bias_md({1, N}, dt::f32, tag::ab);
    memory::desc dst_md({M, N}, dt::f32, tag::ab);
    auto desc = w.bias.defined() ? dnnl::matmul::desc(src_md, wei_md, bias_md, dst_md)
                                 : dnnl::matmul::desc(src_md, wei_md, dst_md);
    dnnl::matmul::primitive_desc pd(desc, user_scratchpad_attr(), dn.engine);
    if (!prep.weights.storage.defined()) {
      prep.weights = make_buffer(pd.weights_desc());
      prep.weights_md = pd.weights_desc();
      reorder_weight(w.weight, {{K, N}, dt::f32, tag::ba}, prep.weights.mem);  // [N, K] row-major == [K, N] ba
    }
    it = prep.plans.emplace(M, MatmulPlan{pd, dnnl::matmul(pd)}).first;
  }
  const Tensor x = to_compute(x_in, precision);
  Buffer scratch = make_buffer(it->second.pd.scratchpad_desc());
  const size_t in_bytes = static_cast<size_t>(M * K) * dtype_size(x.dtype());
  memory src({{M, K}, ct, tag::ab}, dn.engine, x.raw()), dst({{M, N}, dt::f32, tag::ab}, dn.engine, y.raw());
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prep.weights.mem}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch.mem}};
  if (w.bias.defined())
    args.emplace(DNNL_ARG_BIAS, memory({{1, N}, dt::f32, tag::ab}, dn.engine, prep.bias_f32.raw()));
  for (int64_t image = 0; image < images; ++image) {  // the same arguments, moved along the batch
    src.set_data_handle(static_cast<char*>(x.raw()) + image * in_bytes);
    dst.set_data_handle(y.f32() + image * M * N);
    it->second.prim.execute(dn.stream, args);
  }
  dn.stream.wait();
  return y;
}

Tensor dnnl_matmul(const Tensor& a_in, const Tensor& b_in, Precision precision) {
  OTTER_CHECK(a_in.rank() == 3 && b_in.rank() == 3 && a_in.dim(0) == b_in.dim(0) && a_in.dim(2) == b_in.dim(1),
              "matmul needs a[B, M, K] and b[B, K, N], got ", a_in.describe(), " and ", b_in.describe());
  const int64_t B = a_in.dim(0), M = a_in.dim(1), K = a_in.dim(2), N = b_in.dim(2);
  auto& dn = Dnnl::get();
  const dt ct = compute_type(precision);
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int>;
  static std::map<Key, MatmulPlan> plans;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  const Key key{B, M, K, N, static_cast<int>(precision)};
  auto it = plans.find(key);
  if (it == plans.end()) {
    dnnl::matmul::desc desc(memory::desc({B, M, K}, ct, tag::abc), memory::desc({B, K, N}, ct, tag::abc),
                            memory::desc({B, M, N}, dt::f32, tag::abc));
    dnnl::matmul::primitive_desc pd(desc, user_scratchpad_attr(), dn.engine);
    it = plans.emplace(key, MatmulPlan{pd, dnnl::matmul(pd)}).first;
  }
  const Tensor a = to_compute(a_in, precision), b = to_compute(b_in, precision);
  Tensor y = Tensor::empty(Shape{B, M, N}, DType::F32);
  Buffer scratch = make_buffer(it->second.pd.scratchpad_desc());
  it->second.prim.execute(dn.stream, {{DNNL_ARG_SRC, memory({{B, M, K}, ct, tag::abc}, dn.engine, a.raw())},
                                      {DNNL_ARG_WEIGHTS, memory({{B, K, N}, ct, tag::abc}, dn.engine, b.raw())},
                                      {DNNL_ARG_DST, memory({{B, M, N}, dt::f32, tag::abc}, dn.engine, y.raw())},
                                      {DNNL_ARG_SCRATCHPAD, scratch.mem}});
  dn.stream.wait();
  return y;
}

}  // namespace otter::cpu

#pragma once
// A Backend decorator that times every op it forwards, grouped by kind (convolutions by kernel
// size and by what they fuse, linear layers, attention by sequence length, norms, elementwise...),
// with the FLOPs of the compute-bound ones. One UNet pass through it says where a step's time
// goes: which ops run near the machine's rate and which are overhead (`otter-bench --profile`).
#include <chrono>
#include <map>
#include <string>

#include "backend/backend.h"
#include "core/error.h"
#include "core/stopwatch.h"
#include "op_flops.h"

namespace otter::bench {

struct OpTime {
  double seconds = 0;
  double flops = 0;
  int64_t calls = 0;
};

class OpProfiler final : public Backend {
 public:
  // shapes: label convolutions with their channels and output size, and linear layers with their
  // rows, inputs and outputs (a VAE decode's time is mostly the same few kernel kinds at four
  // resolutions, and a UNet's the same kinds at four levels, which the kind alone hides: the deep
  // levels' few pixels per weight run slower).
  explicit OpProfiler(Backend& inner, bool shapes = false) : inner_(inner), shapes_(shapes) {}
  const std::map<std::string, OpTime>& times() const { return times_; }
  void reset() { times_.clear(); }

  std::string name() const override { return inner_.name(); }
  Precision precision() const override { return inner_.precision(); }

  Tensor linear(const Tensor& x, LinearWeights& w) override {
    return timed(linear_kind(x, w, "linear", "linear"), linear_flops(x, w), [&] { return inner_.linear(x, w); });
  }
  Tensor linear(const Tensor& x, LinearWeights& w, const Tensor& residual) override {
    return timed(linear_kind(x, w, "linear+residual", "linear"), linear_flops(x, w),
                 [&] { return inner_.linear(x, w, residual); });
  }
  Tensor matmul(const Tensor& a, const Tensor& b) override {
    return timed("matmul", matmul_flops(a, b), [&] { return inner_.matmul(a, b); });
  }
  Tensor conv2d(const Tensor& x, Conv2dWeights& w) override {
    return timed_conv(conv_kind(w, "conv2d"), w, [&] { return inner_.conv2d(x, w); });
  }
  Tensor conv2d(const Tensor& x, const ConvInputTransform& t, Conv2dWeights& w) override {
    return timed_conv(conv_kind(w, t), w, [&] { return inner_.conv2d(x, t, w); });
  }
  Tensor conv2d(const Tensor& x, const ConvInputTransform& t, Conv2dWeights& w, const Tensor& residual) override {
    return timed_conv(conv_kind(w, t), w, [&] { return inner_.conv2d(x, t, w, residual); });
  }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal) override {
    const std::string kind = cat("attention ", q.dim(1), "x", k.dim(1), " d", q.dim(2) / heads);
    return timed(kind, attention_flops(q, k), [&] { return inner_.attention(q, k, v, heads, scale, causal); });
  }
  Tensor group_norm(const Tensor& x, int groups, const NormWeights& w, bool silu) override {
    return timed("group_norm", 0, [&] { return inner_.group_norm(x, groups, w, silu); });
  }
  Tensor layer_norm(const Tensor& x, const NormWeights& w) override {
    return timed("layer_norm", 0, [&] { return inner_.layer_norm(x, w); });
  }
  Tensor activation(const Tensor& x, Activation a) override {
    return timed("activation", 0, [&] { return inner_.activation(x, a); });
  }
  Tensor geglu(const Tensor& x) override { return timed("geglu", 0, [&] { return inner_.geglu(x); }); }
  Tensor linear_geglu(const Tensor& x, LinearWeights& w) override {
    return timed(linear_kind(x, w, "linear+geglu", "linear+geglu"), linear_flops(x, w), [&] { return inner_.linear_geglu(x, w); });
  }
  Tensor softmax(const Tensor& x) override { return timed("softmax", 0, [&] { return inner_.softmax(x); }); }
  Tensor add(const Tensor& a, const Tensor& b) override {
    return timed("elementwise", 0, [&] { return inner_.add(a, b); });
  }
  Tensor mul(const Tensor& a, const Tensor& b) override {
    return timed("elementwise", 0, [&] { return inner_.mul(a, b); });
  }
  Tensor scale(const Tensor& a, float s) override { return timed("elementwise", 0, [&] { return inner_.scale(a, s); }); }
  void add_inplace(Tensor& a, const Tensor& b) override {
    timed("elementwise", 0, [&] {
      inner_.add_inplace(a, b);
      return Tensor();
    });
  }
  Tensor concat(std::span<const Tensor> xs, int dim) override {
    return timed("concat", 0, [&] { return inner_.concat(xs, dim); });
  }
  std::vector<Tensor> chunk(const Tensor& x, int pieces, int dim) override { return inner_.chunk(x, pieces, dim); }
  Tensor batched_transpose(const Tensor& x) override {
    return timed("transpose", 0, [&] { return inner_.batched_transpose(x); });
  }
  Tensor upsample_nearest2x(const Tensor& x) override {
    return timed("upsample", 0, [&] { return inner_.upsample_nearest2x(x); });
  }
  Tensor timestep_embedding(const Tensor& t, int dim, bool flip, float shift) override {
    return inner_.timestep_embedding(t, dim, flip, shift);
  }
  void release_cached_memory() override { inner_.release_cached_memory(); }

 private:
  template <class Fn>
  Tensor timed(const std::string& kind, double flops, Fn&& fn) {
    const auto start = SteadyClock::now();
    Tensor y = fn();
    record(kind, seconds_since(start), flops);
    return y;
  }
  void record(const std::string& kind, double seconds, double flops) {
    OpTime& t = times_[kind];
    t.seconds += seconds;
    t.flops += flops;
    ++t.calls;
  }
  // A convolution's FLOPs (and, with conv_shapes, its label) follow from its output's size.
  template <class Fn>
  Tensor timed_conv(const std::string& kind, const Conv2dWeights& w, Fn&& fn) {
    const auto start = SteadyClock::now();
    Tensor y = fn();
    const double seconds = seconds_since(start);
    record(shapes_ ? cat(kind, " ", w.weight.dim(1), "->", w.weight.dim(0), " at ", y.dim(2), "x", y.dim(3)) : kind,
           seconds, conv_flops(y, w));
    return y;
  }
  // `kind`, or with shapes `shaped` and the layer's shape: "linear 2048x320->320" (rows x inputs ->
  // outputs), "linear+residual ..." for one that adds a skip connection as it writes.
  std::string linear_kind(const Tensor& x, const LinearWeights& w, const char* shaped, const char* kind) const {
    if (!shapes_) return kind;
    const int64_t in = x.dim(-1);
    return cat(shaped, " ", in > 0 ? x.numel() / in : 0, "x", in, "->", w.weight.dim(0));
  }
  static std::string conv_kind(const Conv2dWeights& w, const char* what) {
    return cat(what, " ", w.weight.dim(2), "x", w.weight.dim(3));
  }
  static std::string conv_kind(const Conv2dWeights& w, const ConvInputTransform& t) {
    return conv_kind(w, t.upsample_nearest2x ? "upsample+conv2d" : t.group_norm ? "norm+silu+conv2d" : "conv2d");
  }

  Backend& inner_;
  bool shapes_;
  std::map<std::string, OpTime> times_;
};

}  // namespace otter::bench

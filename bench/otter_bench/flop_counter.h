#pragma once
// A Backend decorator that forwards every op to a real backend and counts the floating-point
// operations of the compute-bound ones (convolution, linear, matmul, attention; a multiply-add
// counts 2). Running one model pass through it gives the pass's FLOPs from the architecture as
// actually executed.
#include "backend/backend.h"
#include "op_flops.h"

namespace otter::bench {

class FlopCounter final : public Backend {
 public:
  explicit FlopCounter(Backend& inner) : inner_(inner) {}
  double flops() const { return flops_; }
  void reset() { flops_ = 0; }

  std::string name() const override { return inner_.name(); }
  Precision precision() const override { return inner_.precision(); }
  Tensor linear(const Tensor& x, LinearWeights& w) override {
    flops_ += linear_flops(x, w);
    return inner_.linear(x, w);
  }
  Tensor linear(const Tensor& x, LinearWeights& w, const Tensor& residual) override {
    flops_ += linear_flops(x, w);
    return inner_.linear(x, w, residual);
  }
  Tensor matmul(const Tensor& a, const Tensor& b) override {
    flops_ += matmul_flops(a, b);
    return inner_.matmul(a, b);
  }
  Tensor conv2d(const Tensor& x, Conv2dWeights& w) override { return count(inner_.conv2d(x, w), w); }
  Tensor conv2d(const Tensor& x, const ConvInputTransform& t, Conv2dWeights& w) override {
    return count(inner_.conv2d(x, t, w), w);
  }
  Tensor conv2d(const Tensor& x, const ConvInputTransform& t, Conv2dWeights& w, const Tensor& residual) override {
    return count(inner_.conv2d(x, t, w, residual), w);
  }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal) override {
    flops_ += attention_flops(q, k);
    return inner_.attention(q, k, v, heads, scale, causal);
  }
  Tensor group_norm(const Tensor& x, int groups, const NormWeights& w, bool silu) override {
    return inner_.group_norm(x, groups, w, silu);
  }
  Tensor layer_norm(const Tensor& x, const NormWeights& w) override { return inner_.layer_norm(x, w); }
  Tensor activation(const Tensor& x, Activation a) override { return inner_.activation(x, a); }
  Tensor geglu(const Tensor& x) override { return inner_.geglu(x); }
  Tensor linear_geglu(const Tensor& x, LinearWeights& w) override {
    flops_ += linear_flops(x, w);
    return inner_.linear_geglu(x, w);
  }
  Tensor softmax(const Tensor& x) override { return inner_.softmax(x); }
  Tensor add(const Tensor& a, const Tensor& b) override { return inner_.add(a, b); }
  Tensor mul(const Tensor& a, const Tensor& b) override { return inner_.mul(a, b); }
  Tensor scale(const Tensor& a, float s) override { return inner_.scale(a, s); }
  void add_inplace(Tensor& a, const Tensor& b) override { inner_.add_inplace(a, b); }
  Tensor concat(std::span<const Tensor> xs, int dim) override { return inner_.concat(xs, dim); }
  std::vector<Tensor> chunk(const Tensor& x, int pieces, int dim) override { return inner_.chunk(x, pieces, dim); }
  Tensor batched_transpose(const Tensor& x) override { return inner_.batched_transpose(x); }
  Tensor upsample_nearest2x(const Tensor& x) override { return inner_.upsample_nearest2x(x); }
  Tensor timestep_embedding(const Tensor& t, int dim, bool flip, float shift) override {
    return inner_.timestep_embedding(t, dim, flip, shift);
  }
  void release_cached_memory() override { inner_.release_cached_memory(); }

 private:
  Tensor count(Tensor y, const Conv2dWeights& w) {
    flops_ += conv_flops(y, w);
    return y;
  }
  Backend& inner_;
  double flops_ = 0;
};

}  // namespace otter::bench

// The CPU backend: convolutions and linear layers on otter's 16-bit implicit-GEMM path (half_ops.h)
// under f16 (f16 arithmetic on AVX-512 FP16, f16 weights with f32 arithmetic on AVX2 + F16C), and
// under bf16 where the CPU has AVX-512 BF16; oneDNN for them otherwise (f32, and
// bf16 emulated on plain AVX-512) and for batched matmuls; otter's own vectorised OpenMP kernels
// for everything else.
#include <omp.h>

#include <cstdlib>
#include <optional>

#include "backend/backend.h"
#include "backend/cpu/dnnl_ops.h"
#include "backend/cpu/half_gemm.h"
#include "backend/cpu/half_ops.h"
#include "backend/cpu/kernels.h"
#include "core/allocator.h"
#include "core/cpu_features.h"
#include "core/error.h"

namespace otter {
namespace {

// f16's kernels on this CPU: f16 arithmetic where it has AVX-512 FP16, else f16 weights with f32
// arithmetic where it has AVX2, FMA and F16C (make_cpu_backend refuses f16 on anything less).
cpu::HalfFormat f16_format() {
  return cpu::half_ops_available(cpu::HalfFormat::F16) ? cpu::HalfFormat::F16 : cpu::HalfFormat::F16Weights;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(Precision precision) : precision_(precision) {
    if (cpu_uses_16bit_kernels(precision)) half_ = precision == Precision::F16 ? f16_format() : cpu::HalfFormat::BF16;
  }

  std::string name() const override { return cat("cpu (", precision_name(precision_), ")"); }
  Precision precision() const override { return precision_; }

 private:
  // Unmerged LoRA (--lora-unmerged): y += scale · up(down(x)) per update, each a layer of its own
  // (prepared like any weight, so every precision runs it).
  void add_lora(Tensor& y, const Tensor& x, LinearWeights& w) {
    if (!w.lora) return;
    for (LinearLora& l : *w.lora) add_scaled(y, linear(linear(x, l.down), l.up), l.scale);
  }
  void add_lora(Tensor& y, const Tensor& x, const ConvInputTransform* t, Conv2dWeights& w) {
    if (!w.lora) return;
    for (ConvLora& l : *w.lora) add_scaled(y, conv2d(t ? conv2d(x, *t, l.down) : conv2d(x, l.down), l.up), l.scale);
  }
  static void add_scaled(Tensor& y, const Tensor& u_in, float s) {
    const Tensor u = u_in.contiguous();
    OTTER_CHECK(y.dtype() == DType::F32 && u.dtype() == DType::F32 && y.numel() == u.numel() && y.is_contiguous(),
                "LoRA branch output ", u.describe(), " does not match the layer's ", y.describe());
    for (int64_t i = 0; i < y.numel(); ++i) y.f32()[i] += s * u.f32()[i];
  }

 public:

  Tensor linear(const Tensor& x, LinearWeights& w) override {
    Tensor y = half_ ? cpu::half_linear(x, w, *half_) : cpu::dnnl_linear(x, w, precision_);
    add_lora(y, x, w);
    return y;
  }
  Tensor linear(const Tensor& x, LinearWeights& w, const Tensor& residual) override {
    Tensor y;
    if (half_) {
      y = cpu::half_linear(x, w, *half_, &residual);
    } else {
      y = cpu::dnnl_linear(x, w, precision_);
      cpu::add_residual(y, residual, "linear");
    }
    add_lora(y, x, w);
    return y;
  }
  // Batched matmuls (no weights) stay on oneDNN; f16 computes them in f32.
  Tensor matmul(const Tensor& a, const Tensor& b) override {
    return cpu::dnnl_matmul(a, b, precision_ == Precision::F16 ? Precision::F32 : precision_);
  }
  Tensor conv2d(const Tensor& x, Conv2dWeights& w) override {
    Tensor y = half_ ? cpu::half_conv2d(x, w, *half_) : cpu::dnnl_conv2d(x, w, precision_);
    add_lora(y, x, nullptr, w);
    return y;
  }
  Tensor conv2d(const Tensor& x, const ConvInputTransform& t, Conv2dWeights& w) override {
    Tensor y = half_ ? cpu::half_conv2d(x, w, *half_, &t)
                     : cpu::dnnl_conv2d(cpu::apply_conv_input_transform(x, t), w, precision_);
    add_lora(y, x, &t, w);
    return y;
  }
  Tensor conv2d(const Tensor& x, const ConvInputTransform& t, Conv2dWeights& w, const Tensor& residual) override {
    Tensor y;
    if (half_) {
      y = cpu::half_conv2d(x, w, *half_, &t, &residual);
    } else {
      y = cpu::dnnl_conv2d(cpu::apply_conv_input_transform(x, t), w, precision_);
      cpu::add_residual(y, residual, "conv2d");
    }
    add_lora(y, x, &t, w);
    return y;
  }

  Tensor group_norm(const Tensor& x, int groups, const NormWeights& w, bool then_silu) override {
    return cpu::group_norm(x, groups, w, then_silu);
  }
  Tensor layer_norm(const Tensor& x, const NormWeights& w) override { return cpu::layer_norm(x, w); }
  Tensor activation(const Tensor& x, Activation act) override { return cpu::activation(x, act); }
  Tensor geglu(const Tensor& x) override { return cpu::geglu(x); }
  // Fused on the 16-bit path; a LoRA adds to the projection before the gate, so with one the ops
  // run apart.
  Tensor linear_geglu(const Tensor& x, LinearWeights& w) override {
    if (half_ && !w.lora) return cpu::half_linear_geglu(x, w, *half_);
    return geglu(linear(x, w));
  }
  Tensor softmax(const Tensor& x) override { return cpu::softmax(x); }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal) override {
    const auto products = !half_ || cpu::f32_activations(*half_) ? cpu::AttentionProducts::F32
                          : *half_ == cpu::HalfFormat::F16       ? cpu::AttentionProducts::F16
                                                                 : cpu::AttentionProducts::BF16;
    return cpu::attention(q, k, v, heads, scale, causal, products);
  }
  Tensor add(const Tensor& a, const Tensor& b) override { return cpu::binary(a, b, cpu::BinaryOp::Add); }
  Tensor mul(const Tensor& a, const Tensor& b) override { return cpu::binary(a, b, cpu::BinaryOp::Mul); }
  Tensor scale(const Tensor& a, float s) override { return cpu::scale(a, s); }
  void add_inplace(Tensor& a, const Tensor& b) override { cpu::add_inplace(a, b); }
  Tensor concat(std::span<const Tensor> xs, int dim) override { return cpu::concat(xs, dim); }
  std::vector<Tensor> chunk(const Tensor& x, int pieces, int dim) override { return cpu::chunk(x, pieces, dim); }
  Tensor batched_transpose(const Tensor& x) override { return cpu::batched_transpose(x); }
  Tensor upsample_nearest2x(const Tensor& x) override { return cpu::upsample_nearest2x(x); }
  Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float freq_shift) override {
    return cpu::timestep_embedding(t, dim, flip_sin_to_cos, freq_shift);
  }
  void release_cached_memory() override {
    // trim, not only free_cached: blocks under the allocator's mapping size go back through
    // free(), and glibc keeps those pages until malloc_trim (37 MB of the demo UNet's f32 weights
    // stayed resident through the decode after the CLI dropped them).
    Allocator::global().trim();
    cpu::half_release_scratch();  // empty unless the 16-bit path ran
  }

 private:
  Precision precision_;
  std::optional<cpu::HalfFormat> half_;  // the 16-bit implicit-GEMM path's format, if it runs
};

}  // namespace

Precision parse_precision(const std::string& name) {
  if (name == "f32") return Precision::F32;
  if (name == "bf16") return Precision::BF16;
  if (name == "f16") return Precision::F16;
  if (name == "auto") return precision_probe().preferred;
  throw Error(cat("precision must be f32, bf16, f16 or auto, got '", name, "'"));
}

const char* precision_name(Precision p) {
  return p == Precision::BF16 ? "bf16" : p == Precision::F16 ? "f16" : "f32";
}

bool cpu_uses_16bit_kernels(Precision precision) {
  if (precision == Precision::F16) return true;
  // OTTER_BF16_ONEDNN=1 keeps bf16 on oneDNN: the path before the 16-bit kernels, for comparisons
  // in one build (bench, tests).
  return precision == Precision::BF16 && cpu::half_ops_available(cpu::HalfFormat::BF16) &&
         std::getenv("OTTER_BF16_ONEDNN") == nullptr;
}

bool cpu_runs_precision(Precision precision) {
  switch (precision) {
    case Precision::F32: return true;
    case Precision::BF16: return cpu_features().avx512f;
    case Precision::F16: return cpu::half_ops_available(f16_format());
  }
  return false;
}

bool cpu_16bit_kernels_read_f32(Precision precision) {
  return precision == Precision::F16 && cpu::f32_activations(f16_format());
}

std::unique_ptr<Backend> make_cpu_backend(Precision precision, int threads) {
  if (precision == Precision::BF16 && !cpu_runs_precision(precision))
    throw Error(cat("bf16 compute needs a CPU with AVX-512 (ideally AVX-512 BF16); use --precision ",
                    cpu_runs_precision(Precision::F16) ? "f16 (f16 weights with f32 arithmetic: half the memory) or " : "",
                    "f32 on this CPU"));
  if (precision == Precision::F16 && !cpu_runs_precision(precision))
    throw Error("f16 needs a CPU with AVX-512 FP16, or AVX2 with FMA and F16C (f16 weights, f32 arithmetic); use "
                "--precision f32 (or auto) on this CPU");
  // Default: one thread per physical core, unless OMP_NUM_THREADS says otherwise.
  if (threads <= 0 && std::getenv("OMP_NUM_THREADS") == nullptr) threads = physical_cores();
  if (threads > 0) omp_set_num_threads(threads);
  return std::make_unique<CpuBackend>(precision);
}

}  // namespace otter

#pragma once
// The op interface every backend implements (CPU now, CUDA later). Models are written only
// against this: they never touch oneDNN or intrinsics. Tensors are F32, contiguous, NCHW for
// images and [B, N, C] for token sequences; ops return new tensors from the caching allocator.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace otter {

// Arithmetic used inside convolution, matmul and attention. Inputs and outputs stay F32;
// BF16 rounds the operands to bfloat16 and accumulates in F32; F16 (AVX-512 FP16: convolutions,
// linear layers and attention's two products) rounds them to f16 and sums products in f16 (at most
// 64 terms per partial sum) into F32.
enum class Precision { F32, BF16, F16 };

enum class Activation { SiLU, GeluErf, GeluTanh, QuickGelu };

struct NormWeights;

// What a convolution does to its input first, in this order: group norm (optionally followed by
// SiLU), then nearest-neighbour 2x upsampling. Every ResnetBlock2D convolution starts with
// norm + SiLU and every upsampler with the 2x; a backend that fuses them (the f16 path applies
// them while it converts the input) never holds the transformed tensor, which at the VAE's
// 512x512 stages is 268 MB a time.
struct ConvInputTransform {
  const NormWeights* group_norm = nullptr;  // none when null
  int groups = 0;
  bool silu = false;  // only after a group norm
  bool upsample_nearest2x = false;
};

// What a backend derives from a layer's weights (reordered, converted, packed for its kernels),
// built lazily on first use and shared by the layer's copies. Dropping it gives the memory back;
// the next use builds it again from the weights (still mapped from the file).
struct PreparedWeights {
  std::shared_ptr<void> dnnl;  // oneDNN's reordered copy, for the precision it was made for
  std::shared_ptr<void> half;  // the 16-bit kernels' packed panels
  void release() {
    dnnl.reset();
    half.reset();
  }
  bool held() const { return dnnl || half; }
};

// A layer's prepared slot, for the backend's ops; weights built by hand with a null `prepared`
// get one here rather than a crash.
template <class LayerWeights>
PreparedWeights& prepared_slot(LayerWeights& w) {
  if (!w.prepared) w.prepared = std::make_shared<PreparedWeights>();
  return *w.prepared;
}

// The prepared slots of one model component (every layer its loader built), so that a caller
// done with the component — the CLI after the text encoding, or after the last denoising step —
// can give back its prepared weights at once (for SD 1.5's UNet in bf16, 1.7 GB) before the
// next stage needs memory.
class PreparedWeightsSet {
 public:
  void add(std::shared_ptr<PreparedWeights> slot) { slots_.push_back(std::move(slot)); }
  void release() {
    for (const auto& s : slots_) s->release();
  }
  size_t layers() const { return slots_.size(); }
  size_t held() const {
    size_t n = 0;
    for (const auto& s : slots_) n += s->held() ? 1 : 0;
    return n;
  }

 private:
  std::vector<std::shared_ptr<PreparedWeights>> slots_;
};

struct LinearLora;
struct ConvLora;

// A linear layer's weights as stored, and what the backend prepared from them.
struct LinearWeights {
  Tensor weight;  // [out, in], any float dtype as stored in the checkpoint
  Tensor bias;    // [out] or undefined
  std::shared_ptr<PreparedWeights> prepared = std::make_shared<PreparedWeights>();
  // LoRA updates applied unmerged: the output gains scale · up(down(x)) for each (null: none).
  std::shared_ptr<std::vector<LinearLora>> lora{};
};

struct Conv2dWeights {
  Tensor weight;  // [out, in, kh, kw]
  Tensor bias;    // [out] or undefined
  int stride = 1;
  // Zero padding per side; the VAE encoder's downsampler pads only bottom and right.
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  std::shared_ptr<PreparedWeights> prepared = std::make_shared<PreparedWeights>();
  // As LinearWeights::lora: down is a conv with this conv's kernel, stride and padding, up a 1x1.
  std::shared_ptr<std::vector<ConvLora>> lora{};
};

struct LinearLora {
  LinearWeights down, up;  // [rank, in], [out, rank]
  float scale = 1.0f;      // weight · alpha / rank
};

struct ConvLora {
  Conv2dWeights down, up;  // [rank, in, kh, kw], [out, rank, 1, 1]
  float scale = 1.0f;
};

struct NormWeights {
  Tensor gamma;  // [C]
  Tensor beta;   // [C]
  float eps = 1e-5f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Precision precision() const = 0;

  // x[..., in] -> x @ W^T + b: [..., out]
  virtual Tensor linear(const Tensor& x, LinearWeights& w) = 0;
  // x @ W^T + b + residual (the output's shape), the residual added as the result is written (a
  // transformer's skip connections, without another pass over the output).
  virtual Tensor linear(const Tensor& x, LinearWeights& w, const Tensor& residual) = 0;
  // a[B, M, K] @ b[B, K, N] -> [B, M, N]
  virtual Tensor matmul(const Tensor& a, const Tensor& b) = 0;
  // x[N, C, H, W] -> [N, O, H', W']
  virtual Tensor conv2d(const Tensor& x, Conv2dWeights& w) = 0;
  // conv2d(transform(x)): the same result as running the transform's ops first, fused where the
  // backend can.
  virtual Tensor conv2d(const Tensor& x, const ConvInputTransform& transform, Conv2dWeights& w) = 0;
  // conv2d(transform(x)) + residual (the output's shape): a resnet's skip connection added as the
  // result is written.
  virtual Tensor conv2d(const Tensor& x, const ConvInputTransform& transform, Conv2dWeights& w,
                        const Tensor& residual) = 0;

  // x[N, C, ...] normalised over (C/groups, ...) per group; optional SiLU afterwards (fused).
  virtual Tensor group_norm(const Tensor& x, int groups, const NormWeights& w, bool then_silu = false) = 0;
  // Normalised over the last dimension.
  virtual Tensor layer_norm(const Tensor& x, const NormWeights& w) = 0;

  virtual Tensor activation(const Tensor& x, Activation act) = 0;
  // [..., 2C] -> [..., C]: value * GELU(gate) with value = first half, gate = second half.
  virtual Tensor geglu(const Tensor& x) = 0;
  // geglu(linear(x, w)), the feed-forward's first layer and its gate: the same values, fused where
  // the backend can (the CPU's 16-bit path applies the gate as the products are written, so the
  // [..., 2C] projection never exists). This default runs the two ops.
  virtual Tensor linear_geglu(const Tensor& x, LinearWeights& w) { return geglu(linear(x, w)); }
  // Softmax over the last dimension.
  virtual Tensor softmax(const Tensor& x) = 0;

  // Fused scaled-dot-product attention, never materialising the [Nq, Nk] matrix.
  // q[B, Nq, H*D], k[B, Nk, H*D], v[B, Nk, H*D] -> [B, Nq, H*D]; `causal` masks keys after the query.
  virtual Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale,
                           bool causal = false) = 0;

  // Elementwise with NumPy broadcasting (trailing dimensions aligned).
  virtual Tensor add(const Tensor& a, const Tensor& b) = 0;
  virtual Tensor mul(const Tensor& a, const Tensor& b) = 0;
  virtual Tensor scale(const Tensor& a, float s) = 0;
  // a += b in place (same shape, or b broadcast over a): residual connections without a copy.
  virtual void add_inplace(Tensor& a, const Tensor& b) = 0;

  virtual Tensor concat(std::span<const Tensor> xs, int dim) = 0;
  // Equal pieces along dim (views when possible).
  virtual std::vector<Tensor> chunk(const Tensor& x, int pieces, int dim) = 0;

  // x[N, A, B] -> [N, B, A]: the layout change around every transformer (NCHW feature maps to
  // [N, H·W, C] tokens and back).
  virtual Tensor batched_transpose(const Tensor& x) = 0;

  // Nearest-neighbour 2x upsampling of x[N, C, H, W].
  virtual Tensor upsample_nearest2x(const Tensor& x) = 0;
  // Sinusoidal embedding of timesteps[B] (F32, may be fractional) -> [B, dim], as diffusers'
  // get_timestep_embedding(downscale_freq_shift = freq_shift, max_period = 10000).
  virtual Tensor timestep_embedding(const Tensor& timesteps, int dim, bool flip_sin_to_cos, float freq_shift) = 0;

  // Returns memory the backend holds for reuse (cached tensor blocks, scratch buffers) to the
  // system. Models call it where the sizes they ask for change for good — between denoising and
  // decoding, between the VAE decoder's resolutions — so blocks cut for the sizes just left do not
  // sit beside the ones the next stage needs. Never inside a loop: reuse is what keeps it fast.
  virtual void release_cached_memory() = 0;
};

// The fastest precision on this CPU, measured once per process (a few ms): f16 where AVX-512 FP16
// FMAs clearly outrun f32 FMAs (Intel Sapphire Rapids-class Xeons), else bf16 where AVX-512 BF16
// dot products do (AMD Zen 4), else f32 — including CPUs that have the instructions but run them
// slowly. `--precision auto` uses this.
struct PrecisionProbe {
  Precision preferred = Precision::F32;
  double f32_gflops = 0;   // one core's f32 FMA rate (AVX-512, or AVX2 on CPUs without it)
  double bf16_gflops = 0;  // one core's bf16 dot-product rate (0: not available)
  double f16_gflops = 0;   // one core's AVX-512 FP16 FMA rate (0: not available)
  std::string reason;
};
const PrecisionProbe& precision_probe();

// Parses "f32", "bf16", "f16" or "auto" (the probe's choice); anything else is an error naming the options.
Precision parse_precision(const std::string& name);
const char* precision_name(Precision p);

// The CPU backend (oneDNN + own kernels). `threads` <= 0: one per physical core, or
// OMP_NUM_THREADS where set.
std::unique_ptr<Backend> make_cpu_backend(Precision precision = Precision::F32, int threads = 0);
// Whether the CPU backend runs convolutions, linear layers and attention's products in `precision`
// on otter's 16-bit kernels (f16 always; bf16 where the CPU has AVX-512 BF16, unless
// OTTER_BF16_ONEDNN is set) rather than oneDNN: the memory plan replays that path's buffers.
bool cpu_uses_16bit_kernels(Precision precision);
// Whether make_cpu_backend runs `precision` on this CPU (f32 always; bf16 with AVX-512; f16 with
// AVX-512 FP16, or as f16 weights with AVX2, FMA and F16C).
bool cpu_runs_precision(Precision precision);
// Where they do, whether they read the activations as f32 rather than as a 16-bit copy: f16 on a
// CPU without AVX-512 FP16 runs f16 weights widened by an AVX2 tile, with f32 arithmetic
// (half_gemm.h, HalfFormat::F16Weights), and attention in f32.
bool cpu_16bit_kernels_read_f32(Precision precision);

}  // namespace otter

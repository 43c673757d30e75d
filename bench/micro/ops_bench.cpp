// Microbenchmarks of the ops that dominate Stable Diffusion at 512x512, each reporting achieved
// GFLOP/s (compute-bound ops) or GB/s (memory-bound ops), in f32 and bf16, so later work can see
// how close to the machine's peak each op runs.
//   build/release/bench/otter-microbench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/half_gemm.h"
#include "core/cpu_features.h"
#include "core/error.h"

namespace otter {
namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  Tensor t = Tensor::empty(shape, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(gen);
  return t;
}

// The first argument of the per-precision benchmarks: 0 = f32, 1 = bf16, 2 = f16.
Precision precision_of(const benchmark::State& state) {
  return state.range(0) == 2 ? Precision::F16 : state.range(0) == 1 ? Precision::BF16 : Precision::F32;
}

bool skip_unsupported(benchmark::State& state) {
  if (precision_of(state) == Precision::BF16 && !cpu_features().avx512f) {
    state.SkipWithError("bf16 needs AVX-512");
    return true;
  }
  if (precision_of(state) == Precision::F16 && !cpu_runs_precision(Precision::F16)) {
    state.SkipWithError("f16 needs AVX-512 FP16, or AVX2 with FMA and F16C (f16 weights)");
    return true;
  }
  return false;
}

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(precision_name(precision_of(state)));
}

// UNet's most common convolution at 512x512: 3x3, 320 -> 320 channels on 64x64 latents, batch 2 (CFG).
void BM_Conv2d3x3_320(benchmark::State& state) {
  if (skip_unsupported(state)) return;
  auto backend = make_cpu_backend(precision_of(state));
  const Tensor x = random_tensor(Shape{2, 320, 64, 64}, 1);
  Conv2dWeights w{random_tensor(Shape{320, 320, 3, 3}, 2), random_tensor(Shape{320}, 3), 1, 1, 1, 1, 1};
  backend->conv2d(x, w);  // prepare weights and primitive outside the timing
  for (auto _ : state) benchmark::DoNotOptimize(backend->conv2d(x, w));
  set_flops(state, 2.0 * 2 * 320 * 64 * 64 * 320 * 9);
}
BENCHMARK(BM_Conv2d3x3_320)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// A GroupNorm(32) + SiLU + 3x3 convolution (c -> o channels, side x side, n images), as resnets
// run it: fused where the precision's backend can.
void run_norm_silu_conv3x3(benchmark::State& state, int64_t n, int64_t c, int64_t o, int64_t side, float eps) {
  if (skip_unsupported(state)) return;
  auto backend = make_cpu_backend(precision_of(state));
  const Tensor x = random_tensor(Shape{n, c, side, side}, 1);
  const NormWeights norm{random_tensor(Shape{c}, 4), random_tensor(Shape{c}, 5), eps};
  Conv2dWeights w{random_tensor(Shape{o, c, 3, 3}, 2), random_tensor(Shape{o}, 3), 1, 1, 1, 1, 1};
  const ConvInputTransform t{.group_norm = &norm, .groups = 32, .silu = true};
  backend->conv2d(x, t, w);  // prepare weights outside the timing
  for (auto _ : state) benchmark::DoNotOptimize(backend->conv2d(x, t, w));
  set_flops(state, 2.0 * n * side * side * o * c * 9);
}

// The convolution above as a resnet runs it: GroupNorm + SiLU first.
void BM_NormSiluConv2d3x3_320(benchmark::State& state) { run_norm_silu_conv3x3(state, 2, 320, 320, 64, 1e-5f); }
BENCHMARK(BM_NormSiluConv2d3x3_320)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// The UNet's resnet convolutions at batch 2 (CFG) on every level: {precision, channels, side}.
// At 256x256 the levels are 320 channels at 32x32, 640 at 16x16 and 1280 at 8x8 (and 4x4); at
// 512x512 each side doubles. More channels make a tap's weight slice larger (Cp x 64 columns: 40 KB
// at 320, 160 KB at 1280), fewer pixels make fewer tiles share it.
void BM_UNetNormSiluConv2d3x3(benchmark::State& state) {
  run_norm_silu_conv3x3(state, 2, state.range(1), state.range(1), state.range(2), 1e-5f);
}
BENCHMARK(BM_UNetNormSiluConv2d3x3)
    ->ArgsProduct({{0, 1, 2}, {320}, {32}})
    ->ArgsProduct({{0, 1, 2}, {640}, {16, 32}})
    ->ArgsProduct({{0, 1, 2}, {1280}, {4, 8, 16}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The VAE decoder's fused convolutions at 512x512, batch 1: {precision, in channels, out channels,
// side}. Its last up block runs 128 -> 128 at 512x512, enters from 256 channels and ends in the
// 3-channel conv_out; the block before enters 512 -> 256 at 256x256.
void BM_VaeNormSiluConv2d3x3(benchmark::State& state) {
  run_norm_silu_conv3x3(state, 1, state.range(1), state.range(2), state.range(3), 1e-6f);
}
BENCHMARK(BM_VaeNormSiluConv2d3x3)
    ->ArgsProduct({{0, 1, 2}, {128}, {128, 3}, {512}})
    ->ArgsProduct({{0, 1, 2}, {256}, {128}, {512}})
    ->ArgsProduct({{0, 1, 2}, {512}, {256}, {256}})
    ->ArgsProduct({{0, 1, 2}, {256}, {256}, {256}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Attention projections at 512x512: 4096 tokens x 320 -> 320.
void BM_Matmul4096x320x320(benchmark::State& state) {
  if (skip_unsupported(state)) return;
  auto backend = make_cpu_backend(precision_of(state));
  const Tensor x = random_tensor(Shape{4096, 320}, 1);
  LinearWeights w{random_tensor(Shape{320, 320}, 2), Tensor()};
  backend->linear(x, w);
  for (auto _ : state) benchmark::DoNotOptimize(backend->linear(x, w));
  set_flops(state, 2.0 * 4096 * 320 * 320);
}
BENCHMARK(BM_Matmul4096x320x320)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// The 16-bit matmul tiles (src/backend/cpu/half_gemm.h; range(3): 0 = f16 on AVX-512 FP16, 1 = bf16
// on AVX-512 BF16, 2 = f16 weights with f32 arithmetic on AVX2) on the same shapes as the oneDNN linear layers above, the UNet's feed-forward
// at 512x512 (8192 x 320 -> 2560 at batch 2) and at 256x256's deeper levels (512 rows x 640 ->
// 5120, 128 rows x 1280 -> 10240: few rows, large weights), and 128 x 1280 -> 1280.
// One 16-bit GEMM per iteration on range(0) rows x range(1) -> range(2), format range(3); with
// `residuals` > 0, each adds a skip connection taken in turn from that many (so that none is in
// cache when it is read, as in a UNet).
void run_half_gemm(benchmark::State& state, int residuals) {
  constexpr cpu::HalfFormat kFormats[] = {cpu::HalfFormat::F16, cpu::HalfFormat::BF16, cpu::HalfFormat::F16Weights};
  const cpu::HalfFormat format = kFormats[state.range(3)];
  if (!cpu::half_gemm_available(format)) {
    state.SkipWithError(cat("this CPU lacks the instructions of ", cpu::half_format_name(format)).c_str());
    return;
  }
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const Tensor x = random_tensor(Shape{m, k}, 1);
  const cpu::HalfPackedWeights w = cpu::pack_half_weights(random_tensor(Shape{n, k}, 2), format);
  std::vector<Tensor> skip;
  for (uint32_t i = 0; i < static_cast<uint32_t>(residuals); ++i) skip.push_back(random_tensor(Shape{m, n}, 3 + i));
  Tensor y = Tensor::empty(Shape{m, n}, DType::F32);
  size_t turn = 0;
  for (auto _ : state)
    cpu::gemm_half(x.f32(), m, w, nullptr, y.f32(), skip.empty() ? nullptr : skip[turn++ % skip.size()].f32());
  set_flops(state, 2.0 * m * k * n);
  state.SetLabel(cpu::half_format_name(format));
}

void BM_HalfGemm(benchmark::State& state) { run_half_gemm(state, 0); }
BENCHMARK(BM_HalfGemm)->ArgsProduct({{4096}, {320}, {320}, {0, 1, 2}})->ArgsProduct({{8192}, {320}, {2560}, {0, 1, 2}})
    ->ArgsProduct({{2048}, {2048}, {2048}, {0, 1, 2}})->ArgsProduct({{512}, {640}, {5120}, {0, 1, 2}})
    ->ArgsProduct({{128}, {1280}, {10240}, {0, 1, 2}})->ArgsProduct({{128}, {1280}, {1280}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// A linear layer that adds a skip connection as it writes (the attention's output projection),
// with the residual read from memory as in a UNet, where it was written some 50 MB of
// activations earlier: eight residuals taken in turn (84 MB at 8192 x 320). gemm_half asks for
// each row block's residual lines as its tile first runs. range(3): the format, as BM_HalfGemm.
void BM_HalfGemmColdResidual(benchmark::State& state) { run_half_gemm(state, 8); }
BENCHMARK(BM_HalfGemmColdResidual)->ArgsProduct({{8192}, {320}, {320}, {0, 1, 2}})
    ->ArgsProduct({{2048}, {640}, {640}, {0, 1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();

// Packing a checkpoint's f16 weights into the 16-bit tiles' panels, as the first step does for
// every layer (fresh storage each time, as there): a UNet's 3x3 convolutions at its widest level
// (1280 -> 1280, [O, C, 3, 3] read tap by tap) and its largest linear weight (the 1280-wide GEGLU
// projection, 10240 x 1280). GB/s of panels written; range(0): 0 = conv, 1 = linear.
void BM_PackHalfWeights(benchmark::State& state) {
  // The format `auto` runs: f16 on AVX-512 FP16, else bf16 on AVX-512 BF16, else f16 weights on AVX2.
  const cpu::HalfFormat format = cpu::half_gemm_available(cpu::HalfFormat::F16)    ? cpu::HalfFormat::F16
                                 : cpu::half_gemm_available(cpu::HalfFormat::BF16) ? cpu::HalfFormat::BF16
                                                                                   : cpu::HalfFormat::F16Weights;
  if (!cpu::half_gemm_available(format)) {
    state.SkipWithError("this CPU runs none of the 16-bit formats");
    return;
  }
  const bool conv = state.range(0) == 0;
  // Eight weights taken in turn (236 MB / 210 MB of f16): each is read from memory, not a cache,
  // as the first step reads a checkpoint's.
  std::vector<Tensor> weights;
  for (uint32_t i = 0; i < 8; ++i)
    weights.push_back(random_tensor(conv ? Shape{1280, 1280, 3, 3} : Shape{10240, 1280}, 2 + i).to(DType::F16));
  size_t bytes = 0, turn = 0;
  for (auto _ : state) {
    const Tensor& w = weights[turn++ % weights.size()];
    const cpu::HalfPackedWeights p = conv ? cpu::pack_half_conv_weights(w, 1280, format) : cpu::pack_half_weights(w, format);
    bytes = p.panels.size() * sizeof(uint16_t);
    benchmark::DoNotOptimize(p.panels.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(cpu::half_format_name(format));
}
BENCHMARK(BM_PackHalfWeights)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// oneDNN f32 on the same two larger shapes, for the comparison.
void BM_MatmulShapes(benchmark::State& state) {
  auto backend = make_cpu_backend(Precision::F32);
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const Tensor x = random_tensor(Shape{m, k}, 1);
  LinearWeights w{random_tensor(Shape{n, k}, 2), Tensor()};
  backend->linear(x, w);
  for (auto _ : state) benchmark::DoNotOptimize(backend->linear(x, w));
  set_flops(state, 2.0 * m * k * n);
  state.SetLabel("f32");
}
BENCHMARK(BM_MatmulShapes)->Args({4096, 320, 320})->Args({8192, 320, 2560})->Args({2048, 2048, 2048})->Args({512, 640, 5120})->Args({128, 1280, 10240})->Args({128, 1280, 1280})->Unit(benchmark::kMillisecond)->UseRealTime();

// Self-attention (4096 keys) and cross-attention (77 text tokens), 8 heads of 40 dims.
void BM_Attention(benchmark::State& state) {
  if (skip_unsupported(state)) return;
  auto backend = make_cpu_backend(precision_of(state));
  const int64_t nq = 4096, nk = state.range(1), heads = 8, d = 40;
  const Tensor q = random_tensor(Shape{1, nq, heads * d}, 1);
  const Tensor k = random_tensor(Shape{1, nk, heads * d}, 2);
  const Tensor v = random_tensor(Shape{1, nk, heads * d}, 3);
  for (auto _ : state) benchmark::DoNotOptimize(backend->attention(q, k, v, heads, 1.0f / std::sqrt(40.0f), false));
  set_flops(state, 4.0 * heads * nq * nk * d);  // QK^T and PV
}
BENCHMARK(BM_Attention)->Args({0, 4096})->Args({1, 4096})->Args({2, 4096})->Args({0, 77})->Args({1, 77})->Args({2, 77})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// GroupNorm (+SiLU, as in every resnet) on 2x320x64x64: memory-bound, reported as GB/s read + written.
void BM_GroupNormSilu(benchmark::State& state) {
  if (skip_unsupported(state)) return;
  auto backend = make_cpu_backend(precision_of(state));
  const Tensor x = random_tensor(Shape{2, 320, 64, 64}, 1);
  const NormWeights w{random_tensor(Shape{320}, 2), random_tensor(Shape{320}, 3), 1e-5f};
  for (auto _ : state) benchmark::DoNotOptimize(backend->group_norm(x, 32, w, true));
  state.counters["GB/s"] = benchmark::Counter(3.0 * static_cast<double>(x.nbytes()) * 1e-9,  // two reads, one write
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(precision_name(precision_of(state)));
}
BENCHMARK(BM_GroupNormSilu)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace otter

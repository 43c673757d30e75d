// Which compute precision is fastest on this CPU, measured rather than assumed.
//
// AVX-512 BF16 (vdpbf16ps) and AVX-512 FP16 (vfmadd...ph) do 32 multiply-adds per instruction
// against 16 for an f32 FMA, so where a CPU issues them at the FMA rate they double the
// arithmetic rate. Not every CPU that advertises them does: on the Intel Xeon this project is
// developed on, bf16 dot products run at 0.53x the f32 FMA rate (oneDNN's bf16 convolutions and
// matmuls are half as fast as its f32 ones) while f16 FMAs run at 2.15x. A few-ms probe at
// start-up times the instructions on independent accumulator chains (throughput, not latency)
// and picks a 16-bit path only where it is clearly faster: f16 on such Xeons, bf16 on AMD Zen 4.
#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "backend/backend.h"
#include "core/cpu_features.h"
#include "core/stopwatch.h"

namespace otter {
namespace {

constexpr int kIterations = 20000;

// Twelve independent accumulators: more than latency x ports for both instructions, so the loop
// measures issue throughput. Each iteration does 12 instructions.
#define OTTER_PROBE_STEP(OP) \
  a0 = OP(a0);               \
  a1 = OP(a1);               \
  a2 = OP(a2);               \
  a3 = OP(a3);               \
  a4 = OP(a4);               \
  a5 = OP(a5);               \
  a6 = OP(a6);               \
  a7 = OP(a7);               \
  a8 = OP(a8);               \
  a9 = OP(a9);               \
  a10 = OP(a10);             \
  a11 = OP(a11);

// Twelve accumulators of vector type T, made by SET1 (_mm512_set1_ps, _mm256_set1_ps, ...).
#define OTTER_PROBE_INIT_AS(T, SET1)                                                             \
  T a0 = SET1(0.f), a1 = SET1(1.f), a2 = SET1(2.f), a3 = SET1(3.f), a4 = SET1(4.f), a5 = SET1(5.f), \
    a6 = SET1(6.f), a7 = SET1(7.f), a8 = SET1(8.f), a9 = SET1(9.f), a10 = SET1(10.f), a11 = SET1(11.f)
#define OTTER_PROBE_INIT OTTER_PROBE_INIT_AS(__m512, _mm512_set1_ps)

// One lane of the accumulators' sum, so the compiler must compute them.
#define OTTER_PROBE_SUM_AS(CVTSS) CVTSS(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11)
#define OTTER_PROBE_SUM OTTER_PROBE_SUM_AS(_mm512_cvtss_f32)

// Seconds per 12·kIterations f32 FMAs (16 lanes, 32 flops each).
__attribute__((target("avx512f"))) double time_f32_fma(float* sink) {
  OTTER_PROBE_INIT;
  __m512 x = _mm512_set1_ps(1.0001f);
  const __m512 y = _mm512_set1_ps(0.9999f);
  const auto t = SteadyClock::now();
  for (int i = 0; i < kIterations; ++i) {
#define OTTER_FMA(v) _mm512_fmadd_ps(x, y, v)
    OTTER_PROBE_STEP(OTTER_FMA)
#undef OTTER_FMA
    __asm__ volatile("" : "+v"(x));  // keeps the loop from being folded
  }
  const double s = seconds_since(t);
  *sink += OTTER_PROBE_SUM;
  return s;
}

// Seconds per 12·kIterations bf16 dot products (16 lanes, 64 flops each).
__attribute__((target("avx512f,avx512bf16"))) double time_bf16_dot(float* sink) {
  OTTER_PROBE_INIT;
  __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80);  // 1.0 in bf16
  const __m512bh y = x;
  const auto t = SteadyClock::now();
  for (int i = 0; i < kIterations; ++i) {
#define OTTER_DOT(v) _mm512_dpbf16_ps(v, x, y)
    OTTER_PROBE_STEP(OTTER_DOT)
#undef OTTER_DOT
    __asm__ volatile("" : "+v"(x));
  }
  const double s = seconds_since(t);
  *sink += OTTER_PROBE_SUM;
  return s;
}

// Seconds per 12·kIterations f16 FMAs (32 lanes, 64 flops each), AVX-512 FP16.
__attribute__((target("avx512f,avx512fp16"))) double time_f16_fma(float* sink) {
  __m512h a0 = _mm512_set1_ph(0), a1 = _mm512_set1_ph(1), a2 = _mm512_set1_ph(2), a3 = _mm512_set1_ph(3),
          a4 = _mm512_set1_ph(4), a5 = _mm512_set1_ph(5), a6 = _mm512_set1_ph(6), a7 = _mm512_set1_ph(7),
          a8 = _mm512_set1_ph(8), a9 = _mm512_set1_ph(9), a10 = _mm512_set1_ph(10), a11 = _mm512_set1_ph(11);
  __m512h x = _mm512_set1_ph(1.0f);
  const __m512h y = _mm512_set1_ph(0.5f);
  const auto t = SteadyClock::now();
  for (int i = 0; i < kIterations; ++i) {
#define OTTER_FMA_PH(v) _mm512_fmadd_ph(x, y, v)
    OTTER_PROBE_STEP(OTTER_FMA_PH)
#undef OTTER_FMA_PH
    __asm__ volatile("" : "+v"(x));
  }
  const double s = seconds_since(t);
  const __m512h sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
  *sink += static_cast<float>(sum[0]);
  return s;
}

// Seconds per 12·kIterations f32 FMAs on 8 lanes (AVX2; 16 flops each): the f32 rate of CPUs
// without AVX-512, for the report (they have no 16-bit arithmetic to compare it with).
__attribute__((target("avx2,fma"))) double time_f32_fma_avx2(float* sink) {
  OTTER_PROBE_INIT_AS(__m256, _mm256_set1_ps);
  __m256 x = _mm256_set1_ps(1.0001f);
  const __m256 y = _mm256_set1_ps(0.9999f);
  const auto t = SteadyClock::now();
  for (int i = 0; i < kIterations; ++i) {
#define OTTER_FMA(v) _mm256_fmadd_ps(x, y, v)
    OTTER_PROBE_STEP(OTTER_FMA)
#undef OTTER_FMA
    __asm__ volatile("" : "+v"(x));
  }
  const double s = seconds_since(t);
  *sink += OTTER_PROBE_SUM_AS(_mm256_cvtss_f32);
  return s;
}

PrecisionProbe run_probe() {
  PrecisionProbe p;
  const CpuFeatures& f = cpu_features();
  float sink = 0;
  if (!f.avx512f) {
    p.reason = "no AVX-512 (no 16-bit arithmetic): f32";
    // With F16C the weights can stay f16 and be widened as the tiles read them (HalfFormat::
    // F16Weights): f32 arithmetic at f32's speed, half the memory. SD 1.5, Zen 3, 2 threads: CFG
    // step at 256x256 2.51 s against oneDNN f32's 2.54; the CLI's peak RSS 1.87 GB against 3.65.
    if (cpu_runs_precision(Precision::F16)) {  // without AVX-512: as f16 weights
      p.preferred = Precision::F16;
      p.reason = "no AVX-512 (no 16-bit arithmetic); AVX2 and F16C: f16 weights with f32 arithmetic (half the memory of f32, "
                 "at its speed)";
    }
    if (f.avx2 && f.fma) {
      double s = 1e300;
      for (int r = 0; r < 5; ++r) s = std::min(s, time_f32_fma_avx2(&sink));
      p.f32_gflops = 12.0 * kIterations * 8 * 2 / s * 1e-9;
    }
    if (sink == 12345.0f) p.reason += ".";  // consumes the results
    return p;
  }
  double f32_s = 1e300, bf16_s = 1e300;
  // Best of five: the first rounds also bring the core out of a low-power state.
  for (int r = 0; r < 5; ++r) f32_s = std::min(f32_s, time_f32_fma(&sink));
  const double flops = 12.0 * kIterations * 16;
  p.f32_gflops = flops * 2 / f32_s * 1e-9;
  if (f.avx512fp16) {
    double f16_s = 1e300;
    for (int r = 0; r < 5; ++r) f16_s = std::min(f16_s, time_f16_fma(&sink));
    p.f16_gflops = flops * 4 / f16_s * 1e-9;
  }
  if (f.avx512_bf16) {
    for (int r = 0; r < 5; ++r) bf16_s = std::min(bf16_s, time_bf16_dot(&sink));
    p.bf16_gflops = flops * 4 / bf16_s * 1e-9;
  }
  // Clearly faster, not within noise: the 16-bit paths cost accuracy. Between the two, f16 keeps
  // 3 more significant bits, so it wins a tie.
  if (p.f16_gflops > 1.3 * p.f32_gflops && p.f16_gflops >= p.bf16_gflops) {
    p.preferred = Precision::F16;
    p.reason = "f16 FMAs outrun f32 FMAs on this CPU";
  } else if (p.bf16_gflops > 1.3 * p.f32_gflops) {
    p.preferred = Precision::BF16;
    p.reason = "bf16 dot products outrun f32 FMAs on this CPU";
  } else {
    p.preferred = Precision::F32;
    p.reason = "no 16-bit arithmetic is faster than f32 FMAs on this CPU";
  }
  if (sink == 12345.0f) p.reason += ".";  // consumes the results
  return p;
}

}  // namespace

const PrecisionProbe& precision_probe() {
  static const PrecisionProbe probe = run_probe();
  return probe;
}

}  // namespace otter

// Tensor views and copies, the caching allocator, and f16/bf16 conversion (vector paths against
// the scalar ones, scalar ones against exhaustive or closed-form references).
#include <gtest/gtest.h>
#include <sched.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/allocator.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"
#include "core/system_memory.h"
#include "core/tensor.h"

namespace otter {
namespace {

TEST(Allocator, BlocksAreAlignedAndReused) {
  Allocator alloc;
  void* a = alloc.allocate(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  alloc.release(a, 1000);
  void* b = alloc.allocate(1000);
  EXPECT_EQ(a, b);
  const AllocatorStats s = alloc.stats();
  EXPECT_EQ(s.system_allocations, 1u);
  EXPECT_EQ(s.reuses, 1u);
  alloc.release(b, 1000);
}

// Large blocks are mapped directly (2 MB-aligned for huge pages), reused from the cache like small
// ones, and unmapped by free_cached(): the memory is writable end to end and RSS drops at once.
TEST(Allocator, LargeBlocksAreMappedReusedAndReturned) {
  Allocator alloc;
  const size_t bytes = (size_t{5} << 20) + 123;
  auto* a = static_cast<unsigned char*>(alloc.allocate(bytes));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % (size_t{2} << 20), 0u);
  a[0] = 1;
  a[bytes - 1] = 2;
  alloc.release(a, bytes);
  EXPECT_EQ(alloc.allocate(bytes), a);
  EXPECT_EQ(a[bytes - 1], 2);  // the cached block, contents and all
  alloc.release(a, bytes);
  EXPECT_GE(alloc.stats().cached_bytes, bytes);
  alloc.free_cached();
  EXPECT_EQ(alloc.stats().cached_bytes, 0u);
  EXPECT_EQ(alloc.stats().system_allocations, 1u);
}

// A large block written end to end is resident for its bytes in whole 4 KB pages, not in whole
// huge pages: with its mapping rounded up to 2 MB, the huge page past a block's end was resident
// for nothing (0.22 GB over SD 1.5's f32 UNet weights). Where the kernel gives no huge pages the
// two are the same and this holds trivially.
TEST(Allocator, LargeBlockIsResidentForItsPagesOnly) {
  Allocator alloc;
  const size_t bytes = (size_t{6} << 20) + 4096 + 123;  // 6 MB and two 4 KB pages
  const double before = process_memory().resident_bytes;
  auto* a = static_cast<unsigned char*>(alloc.allocate(bytes));
  std::memset(a, 1, bytes);
  const double grown = process_memory().resident_bytes - before;
  EXPECT_GE(grown, static_cast<double>(bytes) - 64 * 1024);
  // 2 MB would mean the last huge page; 256 KB leaves room for this process's other pages.
  EXPECT_LE(grown, static_cast<double>(bytes) + 256 * 1024) << "resident " << grown << " bytes for a block of " << bytes;
  alloc.release(a, bytes);
  alloc.free_cached();
}

// A loop that asks for the same sizes every iteration (as a denoising loop does) reaches the
// system allocator only in its first iteration.
TEST(Allocator, SteadyLoopStopsAllocating) {
  Allocator alloc;
  uint64_t after_first = 0;
  for (int step = 0; step < 5; ++step) {
    Tensor a = Tensor::empty(Shape{2, 4, 64, 64}, DType::F32, alloc);
    Tensor b = Tensor::empty(Shape{2, 320, 64, 64}, DType::F32, alloc);
    { Tensor tmp = Tensor::empty(Shape{77, 768}, DType::BF16, alloc); }
    Tensor c = Tensor::empty(Shape{2, 320, 64, 64}, DType::F32, alloc);
    if (step == 0) after_first = alloc.stats().system_allocations;
  }
  EXPECT_EQ(alloc.stats().system_allocations, after_first);
  EXPECT_EQ(alloc.stats().live_bytes, 0u);
}

TEST(Allocator, PeakTracksLiveBytes) {
  Allocator alloc;
  {
    Tensor a = Tensor::empty(Shape{1024}, DType::F32, alloc);
    Tensor b = Tensor::empty(Shape{1024}, DType::F32, alloc);
  }
  EXPECT_EQ(alloc.stats().peak_live_bytes, 8192u);
  alloc.reset_peak();
  EXPECT_EQ(alloc.stats().peak_live_bytes, 0u);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::empty(Shape{2, 3, 4}, DType::F32);
  for (int i = 0; i < 24; ++i) t.f32()[i] = static_cast<float>(i);
  const Tensor s = t.slice(1, 1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2, 4}));
  EXPECT_FALSE(s.is_contiguous());
  const Tensor c = s.contiguous();
  EXPECT_EQ(c.f32()[0], 4.0f);
  EXPECT_EQ(c.f32()[8], 16.0f);
  const Tensor p = t.permute({2, 0, 1}).contiguous();  // [4, 2, 3]
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.f32()[1], 4.0f);   // p[0,0,1] = t[0,1,0]
  EXPECT_EQ(p.f32()[6], 1.0f);   // p[1,0,0] = t[0,0,1]
  EXPECT_EQ(t.reshape(Shape{6, 4}).f32(), t.f32());
  EXPECT_THROW(s.reshape(Shape{16}), Error);
  EXPECT_THROW(t.reshape(Shape{5, 5}), Error);
  EXPECT_THROW(Tensor::empty(Shape{1, 1, 1, 1, 1}, DType::F32).reshape(Shape{1, 1, 1, 1, 1}).slice(7, 0, 1), Error);
}

TEST(Tensor, DtypeConversionCopies) {
  Tensor t = Tensor::empty(Shape{3}, DType::F32);
  t.f32()[0] = 1.5f;
  t.f32()[1] = -2.25f;
  t.f32()[2] = 65504.0f;
  const Tensor h = t.to(DType::F16).to(DType::F32);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(h.f32()[i], t.f32()[i]);
  Tensor ids = Tensor::empty(Shape{2}, DType::I64);
  ids.data<int64_t>()[0] = 49407;
  ids.data<int64_t>()[1] = -1;
  const Tensor i32 = ids.to(DType::I32);
  EXPECT_EQ(i32.data<int32_t>()[0], 49407);
  EXPECT_EQ(i32.data<int32_t>()[1], -1);
}

// Reference f32 -> f16 rounding through double arithmetic: nearest representable half, ties to
// even, overflow to infinity.
uint16_t reference_f32_to_f16(float f) {
  if (std::isnan(f)) return 0x7e00;
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7c00;
  // Enumerate: halves are (m/1024)·2^(e-15) for normals and m·2^-24 for subnormals.
  uint16_t best = 0;
  double best_err = 1e300;
  int e = a < std::ldexp(1.0, -14) ? 0 : std::ilogb(a) + 15;
  for (int cand_e = std::max(0, e - 1); cand_e <= std::min(30, e + 1); ++cand_e)
    for (int m = 0; m < 1024; ++m) {
      const double v = cand_e == 0 ? m * std::ldexp(1.0, -24) : (1 + m / 1024.0) * std::ldexp(1.0, cand_e - 15);
      const double err = std::fabs(v - a);
      const uint16_t bits = static_cast<uint16_t>((cand_e << 10) | m);
      if (err < best_err || (err == best_err && (bits & 1) == 0)) {
        best_err = err;
        best = bits;
      }
    }
  // Values past the largest half that still round down to it are handled by the enumeration;
  // above 65504 + half an ulp (65520) we returned infinity.
  return sign | best;
}

TEST(Half, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
}

TEST(Half, F32ToF16RoundsToNearestEven) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> mant(-1, 1);
  std::uniform_int_distribution<int> ex(-28, 17);
  for (int i = 0; i < 3000; ++i) {
    const float f = std::ldexp(mant(gen), ex(gen));
    ASSERT_EQ(f32_to_f16(f), reference_f32_to_f16(f)) << f;
  }
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // tie at the top rounds to infinity (even)
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even (zero)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
}

TEST(Half, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  float f;
  uint32_t bits = 0x3f808000;  // exactly halfway between 0x3f80 and 0x3f81: ties to even
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f80);
  bits = 0x3f818000;
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

// The run-time-selected vector paths (F16C, AVX-512 BF16) give the scalar paths' bits.
TEST(Half, VectorPathsMatchScalar) {
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> dist(-70000, 70000);
  std::vector<float> in(1037);
  for (float& v : in) v = dist(gen) * (gen() % 3 == 0 ? 1e-6f : 1.0f);
  for (bool portable : {false, true}) {
    force_portable_kernels(portable);
    std::vector<uint16_t> h(in.size()), b(in.size());
    std::vector<float> back(in.size());
    f32_to_f16_n(in.data(), h.data(), in.size());
    f32_to_bf16_n(in.data(), b.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(h[i], f32_to_f16(in[i])) << i;
      ASSERT_EQ(b[i], f32_to_bf16(in[i])) << i;
    }
    f16_to_f32_n(h.data(), back.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(back[i], f16_to_f32(h[i]));
    bf16_to_f32_n(b.data(), back.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(back[i], bf16_to_f32(b[i]));
  }
  force_portable_kernels(false);
}

}  // namespace
}  // namespace otter

namespace otter {
namespace {

// The default thread count: at least one, never more than the CPUs this process may use.
// f16 <-> bf16 go through f32 in chunks on the bulk paths: every one of the 65536 bit patterns
// (NaN payloads aside) converts as the element-wise rule does, f16 -> f32 -> bf16 (nearest even).
TEST(Half, F16AndBf16ConvertAsTheScalarRule) {
  std::vector<uint16_t> all(65536), out(65536), back(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  convert(all.data(), DType::F16, out.data(), DType::BF16, all.size());
  convert(all.data(), DType::BF16, back.data(), DType::F16, all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const float f = f16_to_f32(all[i]), b = bf16_to_f32(all[i]);
    if (std::isnan(f) || std::isnan(b)) continue;
    ASSERT_EQ(out[i], f32_to_bf16(f)) << i;
    ASSERT_EQ(back[i], f32_to_f16(b)) << i;
  }
}

TEST(CpuFeatures, PhysicalCoresWithinAllowedCpus) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  const int cores = physical_cores();
  EXPECT_GE(cores, 1);
  EXPECT_LE(cores, CPU_COUNT(&allowed));
}

}  // namespace
}  // namespace otter

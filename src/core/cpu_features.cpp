#include "core/cpu_features.h"

namespace otter {
namespace {

CpuFeatures probe() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  return f;
}

CpuFeatures& mutable_features() {
  static CpuFeatures features = probe();
  return features;
}

}  // namespace

const CpuFeatures& cpu_features() { return mutable_features(); }

void force_portable_kernels(bool on) { mutable_features() = on ? CpuFeatures{} : probe(); }

}  // namespace otter

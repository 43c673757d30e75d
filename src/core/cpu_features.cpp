#include "core/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <sched.h>

#include <fstream>
#include <set>
#include <string>
#include <utility>

namespace otter {
namespace {

CpuFeatures probe() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
#if defined(__clang__) && __clang_major__ < 15
  // Clang 14 (the fuzz preset's) does not know these two names: read CPUID (leaf 1 ECX bit 29:
  // F16C; leaf 7 EDX bit 23: AVX512-FP16), on top of the AVX-512 state the OS enables (checked
  // by the avx512f test below).
  unsigned a = 0, b = 0, c = 0, d = 0;
  f.f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1u);
  const bool fp16 = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 23 & 1u);
#else
  f.f16c = __builtin_cpu_supports("f16c");
#endif
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
#if defined(__clang__) && __clang_major__ < 15
  f.avx512fp16 = fp16 && f.avx512f;
#else
  f.avx512fp16 = __builtin_cpu_supports("avx512fp16");
#endif
#endif
  return f;
}

CpuFeatures& mutable_features() {
  static CpuFeatures features = probe();
  return features;
}

}  // namespace

const CpuFeatures& cpu_features() { return mutable_features(); }

int physical_cores() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return 1;
  std::set<std::pair<int, int>> cores;  // (package, core)
  int cpus = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    ++cpus;
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    int package = -1, core = -1;
    std::ifstream(dir + "physical_package_id") >> package;
    std::ifstream(dir + "core_id") >> core;
    if (package < 0 || core < 0) return cpus > 0 ? CPU_COUNT(&allowed) : 1;  // no topology: count CPUs
    cores.emplace(package, core);
  }
  return cores.empty() ? 1 : static_cast<int>(cores.size());
}

void force_portable_kernels(bool on) { mutable_features() = on ? CpuFeatures{} : probe(); }

}  // namespace otter

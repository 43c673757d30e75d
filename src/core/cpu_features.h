#pragma once
// What the CPU we run on can do, probed once. Kernels pick their vector path from this at run
// time, so one binary is correct on any x86-64 and fast where AVX-512 / BF16 exist.
namespace otter {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512_bf16 = false;
  bool avx512fp16 = false;
};

const CpuFeatures& cpu_features();

// Physical cores this process may run on (distinct core ids among the CPUs in its affinity mask):
// hyperthread siblings share one core's FMA units, so a second thread per core only adds
// contention to compute-bound kernels. Falls back to the number of allowed CPUs.
int physical_cores();

// For tests: pretend the CPU lacks every vector extension, to exercise the portable paths.
void force_portable_kernels(bool on);

}  // namespace otter

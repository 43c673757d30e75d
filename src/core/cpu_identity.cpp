#include "core/cpu_identity.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <array>
#include <cstring>

#include "core/cpu_features.h"
#include "core/error.h"

namespace otter {
namespace {

// Core names by (vendor, family, model range), as Linux's arch/x86 sources group them
// (amd.c's Zen generations, intel-family.h). Steppings matter only for Intel's model 0x55.
struct CoreName {
  const char* vendor;
  int family;
  int model_first, model_last;
  int stepping_first, stepping_last;
  const char* name;
};

constexpr int kAnyStepping = 255;

constexpr CoreName kCoreNames[] = {
    {"AuthenticAMD", 0x17, 0x00, 0x2f, 0, kAnyStepping, "Zen"},
    {"AuthenticAMD", 0x17, 0x50, 0x5f, 0, kAnyStepping, "Zen"},
    {"AuthenticAMD", 0x17, 0x30, 0x4f, 0, kAnyStepping, "Zen 2"},
    {"AuthenticAMD", 0x17, 0x60, 0x7f, 0, kAnyStepping, "Zen 2"},
    {"AuthenticAMD", 0x17, 0x90, 0x91, 0, kAnyStepping, "Zen 2"},
    {"AuthenticAMD", 0x17, 0xa0, 0xaf, 0, kAnyStepping, "Zen 2"},
    {"AuthenticAMD", 0x19, 0x00, 0x0f, 0, kAnyStepping, "Zen 3"},
    {"AuthenticAMD", 0x19, 0x20, 0x5f, 0, kAnyStepping, "Zen 3"},
    {"AuthenticAMD", 0x19, 0x10, 0x1f, 0, kAnyStepping, "Zen 4"},
    {"AuthenticAMD", 0x19, 0x60, 0xaf, 0, kAnyStepping, "Zen 4"},
    {"AuthenticAMD", 0x1a, 0x00, 0x2f, 0, kAnyStepping, "Zen 5"},
    {"AuthenticAMD", 0x1a, 0x40, 0x4f, 0, kAnyStepping, "Zen 5"},
    {"AuthenticAMD", 0x1a, 0x60, 0x7f, 0, kAnyStepping, "Zen 5"},
    {"GenuineIntel", 6, 0x3c, 0x3c, 0, kAnyStepping, "Haswell"},
    {"GenuineIntel", 6, 0x45, 0x46, 0, kAnyStepping, "Haswell"},
    {"GenuineIntel", 6, 0x3f, 0x3f, 0, kAnyStepping, "Haswell-X"},
    {"GenuineIntel", 6, 0x3d, 0x3d, 0, kAnyStepping, "Broadwell"},
    {"GenuineIntel", 6, 0x47, 0x47, 0, kAnyStepping, "Broadwell"},
    {"GenuineIntel", 6, 0x4f, 0x4f, 0, kAnyStepping, "Broadwell-X"},
    {"GenuineIntel", 6, 0x4e, 0x4e, 0, kAnyStepping, "Skylake"},
    {"GenuineIntel", 6, 0x5e, 0x5e, 0, kAnyStepping, "Skylake"},
    {"GenuineIntel", 6, 0x8e, 0x8e, 0, kAnyStepping, "Kaby Lake / Coffee Lake"},
    {"GenuineIntel", 6, 0x9e, 0x9e, 0, kAnyStepping, "Kaby Lake / Coffee Lake"},
    {"GenuineIntel", 6, 0xa5, 0xa6, 0, kAnyStepping, "Comet Lake"},
    {"GenuineIntel", 6, 0x55, 0x55, 0, 4, "Skylake-SP"},
    {"GenuineIntel", 6, 0x55, 0x55, 5, 7, "Cascade Lake"},
    {"GenuineIntel", 6, 0x55, 0x55, 10, 11, "Cooper Lake"},
    {"GenuineIntel", 6, 0x7d, 0x7e, 0, kAnyStepping, "Ice Lake"},
    {"GenuineIntel", 6, 0x6a, 0x6a, 0, kAnyStepping, "Ice Lake-SP"},
    {"GenuineIntel", 6, 0x6c, 0x6c, 0, kAnyStepping, "Ice Lake-SP"},
    {"GenuineIntel", 6, 0x8c, 0x8d, 0, kAnyStepping, "Tiger Lake"},
    {"GenuineIntel", 6, 0xa7, 0xa7, 0, kAnyStepping, "Rocket Lake"},
    {"GenuineIntel", 6, 0x97, 0x97, 0, kAnyStepping, "Alder Lake"},
    {"GenuineIntel", 6, 0x9a, 0x9a, 0, kAnyStepping, "Alder Lake"},
    {"GenuineIntel", 6, 0xb7, 0xb7, 0, kAnyStepping, "Raptor Lake"},
    {"GenuineIntel", 6, 0xba, 0xba, 0, kAnyStepping, "Raptor Lake"},
    {"GenuineIntel", 6, 0xbf, 0xbf, 0, kAnyStepping, "Raptor Lake"},
    {"GenuineIntel", 6, 0xaa, 0xaa, 0, kAnyStepping, "Meteor Lake"},
    {"GenuineIntel", 6, 0xac, 0xac, 0, kAnyStepping, "Meteor Lake"},
    {"GenuineIntel", 6, 0xc5, 0xc6, 0, kAnyStepping, "Arrow Lake"},
    {"GenuineIntel", 6, 0xbd, 0xbd, 0, kAnyStepping, "Lunar Lake"},
    {"GenuineIntel", 6, 0x8f, 0x8f, 0, kAnyStepping, "Sapphire Rapids"},
    {"GenuineIntel", 6, 0xcf, 0xcf, 0, kAnyStepping, "Emerald Rapids"},
    {"GenuineIntel", 6, 0xad, 0xae, 0, kAnyStepping, "Granite Rapids"},
    {"GenuineIntel", 6, 0xaf, 0xaf, 0, kAnyStepping, "Sierra Forest"},
};

std::string trim_brand(std::string s) {
  const size_t first = s.find_first_not_of(' ');
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(' ') - first + 1);
}

CpuIdentity probe_identity() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return {};
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);  // the vendor string is EBX, EDX, ECX in that order
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  unsigned leaf1_eax = 0;
  if (__get_cpuid(1, &a, &b, &c, &d)) leaf1_eax = a;
  std::string brand;
  if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000004u) {
    char text[49] = {};
    for (unsigned leaf = 0; leaf < 3; ++leaf) {
      __get_cpuid(0x80000002u + leaf, &a, &b, &c, &d);
      const std::array<unsigned, 4> regs{a, b, c, d};
      std::memcpy(text + 16 * leaf, regs.data(), 16);
    }
    brand = text;
  }
  return decode_cpu_identity(vendor, brand, leaf1_eax);
#else
  return {};
#endif
}

}  // namespace

CpuIdentity decode_cpu_identity(std::string vendor, std::string brand, uint32_t leaf1_eax) {
  CpuIdentity id;
  id.vendor = std::move(vendor);
  id.brand = trim_brand(std::move(brand));
  const int base_family = static_cast<int>(leaf1_eax >> 8 & 0xfu);
  const int base_model = static_cast<int>(leaf1_eax >> 4 & 0xfu);
  id.family = base_family == 0xf ? base_family + static_cast<int>(leaf1_eax >> 20 & 0xffu) : base_family;
  id.model = base_family == 0x6 || base_family == 0xf ? static_cast<int>(leaf1_eax >> 16 & 0xfu) << 4 | base_model
                                                       : base_model;
  id.stepping = static_cast<int>(leaf1_eax & 0xfu);
  return id;
}

std::string cpu_microarchitecture(const CpuIdentity& cpu) {
  for (const CoreName& n : kCoreNames) {
    if (cpu.vendor == n.vendor && cpu.family == n.family && cpu.model >= n.model_first &&
        cpu.model <= n.model_last && cpu.stepping >= n.stepping_first && cpu.stepping <= n.stepping_last)
      return n.name;
  }
  return "";
}

const CpuIdentity& cpu_identity() {
  static const CpuIdentity id = probe_identity();
  return id;
}

std::string describe_cpu() {
  const CpuIdentity& id = cpu_identity();
  if (id.vendor.empty()) return "unknown CPU (no CPUID)";
  const std::string core = cpu_microarchitecture(id);
  std::string features;
  const CpuFeatures& f = cpu_features();
  for (const auto& [has, name] : {std::pair{f.avx2, "AVX2"}, {f.fma, "FMA"}, {f.f16c, "F16C"}, {f.avx512f, "AVX512F"},
                                   {f.avx512bw, "AVX512BW"}, {f.avx512vl, "AVX512VL"}, {f.avx512_bf16, "AVX512_BF16"},
                                   {f.avx512fp16, "AVX512_FP16"}}) {
    if (has) features += cat(features.empty() ? "" : " ", name);
  }
  return cat(id.brand.empty() ? "unnamed CPU" : id.brand, " (", core.empty() ? "" : cat(core, "; "), id.vendor, " family ",
             id.family, " model ", id.model, " stepping ", id.stepping, "); ",
             features.empty() ? "no AVX2" : features);
}

}  // namespace otter

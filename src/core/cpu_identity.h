#pragma once
// Which CPU this is, for the figures otter prints: every benchmark number names the CPU it was
// measured on, and a VM's brand string alone often does not ("AMD EPYC" with no model number),
// so the identity adds CPUID's family and model and, where they are known, the core's name.
#include <cstdint>
#include <string>

namespace otter {

struct CpuIdentity {
  std::string vendor;  // CPUID's vendor string: GenuineIntel, AuthenticAMD, ...
  std::string brand;   // the brand string, trimmed ("" where the CPU has none)
  int family = 0;      // display family and model, as the vendors' manuals compose them
  int model = 0;
  int stepping = 0;
};

// The display family and model from CPUID leaf 1's EAX: the extended family is added only when
// the base family is 15, the extended model prepended only when it is 6 or 15 (Intel SDM vol. 2A,
// CPUID; AMD's manuals use the same rule for their families 15 and up).
CpuIdentity decode_cpu_identity(std::string vendor, std::string brand, uint32_t leaf1_eax);

// The core's name ("Zen 3", "Sapphire Rapids") from vendor, family and model, or "" where the
// table does not know it (the family and model are printed either way).
std::string cpu_microarchitecture(const CpuIdentity& cpu);

// This machine's CPU, read once.
const CpuIdentity& cpu_identity();

// One line: brand, core name, family/model/stepping and the vector extensions otter uses, e.g.
// "AMD EPYC (Zen 3; AuthenticAMD family 25 model 1 stepping 1); AVX2 FMA F16C".
std::string describe_cpu();

}  // namespace otter

// The CPU's name in benchmark figures: CPUID leaf 1 decoded by the vendors' rule (checked on EAX
// values of real parts), the core-name table, and this machine's reading against the kernel's
// own (/proc/cpuinfo), an independent decoder.
#include "core/cpu_identity.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace otter {
namespace {

struct KnownPart {
  const char* what;
  const char* vendor;
  uint32_t leaf1_eax;
  int family, model, stepping;
  const char* core;
};

// EAX of CPUID leaf 1 as these parts report it.
constexpr KnownPart kParts[] = {
    {"EPYC 7763 (Milan)", "AuthenticAMD", 0x00a00f11, 25, 0x01, 1, "Zen 3"},
    {"Ryzen 9 5950X (Vermeer)", "AuthenticAMD", 0x00a20f10, 25, 0x21, 0, "Zen 3"},
    {"EPYC 9654 (Genoa)", "AuthenticAMD", 0x00a10f11, 25, 0x11, 1, "Zen 4"},
    {"Ryzen 9 7950X (Raphael)", "AuthenticAMD", 0x00a60f12, 25, 0x61, 2, "Zen 4"},
    {"EPYC 9005 (Turin)", "AuthenticAMD", 0x00b00f21, 26, 0x02, 1, "Zen 5"},
    {"EPYC 7742 (Rome)", "AuthenticAMD", 0x00830f10, 23, 0x31, 0, "Zen 2"},
    {"Xeon Platinum 8480+ (Sapphire Rapids)", "GenuineIntel", 0x000806f8, 6, 0x8f, 8, "Sapphire Rapids"},
    {"Xeon Platinum 8259CL", "GenuineIntel", 0x00050657, 6, 0x55, 7, "Cascade Lake"},
    {"Xeon Platinum 8175M", "GenuineIntel", 0x00050654, 6, 0x55, 4, "Skylake-SP"},
    {"Xeon Platinum 8375C (Ice Lake)", "GenuineIntel", 0x000606a6, 6, 0x6a, 6, "Ice Lake-SP"},
    {"Core i9-12900K (Alder Lake)", "GenuineIntel", 0x00090672, 6, 0x97, 2, "Alder Lake"},
};

TEST(CpuIdentity, DecodesFamilyModelSteppingOfKnownParts) {
  for (const KnownPart& p : kParts) {
    const CpuIdentity id = decode_cpu_identity(p.vendor, "  brand  ", p.leaf1_eax);
    EXPECT_EQ(id.family, p.family) << p.what;
    EXPECT_EQ(id.model, p.model) << p.what;
    EXPECT_EQ(id.stepping, p.stepping) << p.what;
    EXPECT_EQ(id.brand, "brand") << p.what;
    EXPECT_EQ(cpu_microarchitecture(id), p.core) << p.what;
  }
}

TEST(CpuIdentity, ExtendedFieldsCountOnlyWhereTheRuleSaysSo) {
  // Base family 5: the extended model (1 here) is not part of the model, nor the extended family
  // (0x30 here) part of the family.
  const CpuIdentity p5 = decode_cpu_identity("GenuineIntel", "", 0x03010543);
  EXPECT_EQ(p5.family, 5);
  EXPECT_EQ(p5.model, 4);
  EXPECT_EQ(p5.stepping, 3);
  EXPECT_EQ(cpu_microarchitecture(p5), "");
  // A part the table does not know keeps its numbers and gets no name; another vendor's family
  // and model never match.
  EXPECT_EQ(cpu_microarchitecture(decode_cpu_identity("GenuineIntel", "", 0x00000611)), "");
  EXPECT_EQ(cpu_microarchitecture(decode_cpu_identity("GenuineIntel", "", 0x00a00f11)), "");
}

// The kernel decodes the same registers for /proc/cpuinfo; the two must agree.
TEST(CpuIdentity, ThisMachineMatchesProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  std::string line, vendor;
  int family = -1, model = -1, stepping = -1;
  while (std::getline(in, line) && !(family >= 0 && model >= 0 && stepping >= 0 && !vendor.empty())) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "vendor_id") vendor = value;
    if (key == "cpu family") family = std::stoi(value);
    if (key == "model") model = std::stoi(value);
    if (key == "stepping") stepping = std::stoi(value);
  }
  if (family < 0 || model < 0 || vendor.empty()) GTEST_SKIP() << "/proc/cpuinfo has no x86 family and model here";
  const CpuIdentity& id = cpu_identity();
  EXPECT_EQ(id.vendor, vendor);
  EXPECT_EQ(id.family, family);
  EXPECT_EQ(id.model, model);
  if (stepping >= 0) {
    EXPECT_EQ(id.stepping, stepping);
  }
  const std::string line_out = describe_cpu();
  EXPECT_NE(line_out.find("family " + std::to_string(family) + " model " + std::to_string(model)), std::string::npos)
      << line_out;
}

}  // namespace
}  // namespace otter

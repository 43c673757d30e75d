#pragma once
// How much memory this process has and may still take: its own resident size (now and at its
// peak) and what the system and its control group leave free. Read from /proc and cgroup v2 (v1
// as a fall-back); a value that cannot be read is absent rather than guessed.
#include <optional>
#include <string>

namespace otter {

struct ProcessMemory {
  double resident_bytes = 0;       // VmRSS
  double peak_resident_bytes = 0;  // VmHWM (the high-water mark since start or the last reset)
};
ProcessMemory process_memory();

struct SystemMemory {
  std::optional<double> mem_available;  // /proc/meminfo MemAvailable
  std::optional<double> cgroup_limit;   // memory.max (v2) or memory.limit_in_bytes (v1); absent when unlimited
  std::optional<double> cgroup_usage;   // memory.current / memory.usage_in_bytes
  // What this process could grow to: min(MemAvailable, cgroup limit − usage), plus what it already
  // holds (its RSS is part of the usage and not of MemAvailable). Absent when nothing is readable.
  std::optional<double> available_to_process;
  std::string describe() const;  // "MemAvailable 21.3 GB, cgroup limit 24.0 GB (using 1.2 GB)"
};
SystemMemory system_memory();

// "2.71 GB", "0.241 GB" (three decimals under 1 GB): how otter prints memory.
std::string format_gb(double bytes);

}  // namespace otter

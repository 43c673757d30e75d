#include "core/system_memory.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace otter {
namespace {

// "Key:   123 kB" lines of /proc/self/status and /proc/meminfo.
std::optional<double> proc_kib_field(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0 || line.size() <= key.size() || line[key.size()] != ':') continue;
    std::istringstream fields(line.substr(key.size() + 1));
    double kib = 0;
    if (fields >> kib) return kib * 1024.0;
  }
  return std::nullopt;
}

// A cgroup file holding one number ("max" = unlimited).
std::optional<double> cgroup_number(const std::string& file) {
  std::ifstream in(file);
  std::string word;
  if (!(in >> word) || word == "max") return std::nullopt;
  try {
    const double value = std::stod(word);
    // cgroup v1 reports "unlimited" as a number near 2^63.
    return value >= 1e18 ? std::nullopt : std::optional<double>(value);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// This process's cgroup folders: v2 ("0::/path") under /sys/fs/cgroup, v1 ("N:...memory...:/path")
// under /sys/fs/cgroup/memory. Empty when the process has none of that kind.
struct CgroupDirs {
  std::string v2, v1;
};
CgroupDirs cgroup_dirs() {
  CgroupDirs dirs;
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1), path = line.substr(second + 1);
    if (line.compare(0, first, "0") == 0 && controllers.empty()) dirs.v2 = "/sys/fs/cgroup" + path;
    std::istringstream list(controllers);
    for (std::string c; std::getline(list, c, ',');)
      if (c == "memory") dirs.v1 = "/sys/fs/cgroup/memory" + path;
  }
  return dirs;
}

// The innermost limit from `dir` up to `root`, with that group's usage.
bool find_limit(std::string dir, const std::string& root, const char* limit_file, const char* usage_file,
                SystemMemory& s) {
  while (dir.size() >= root.size()) {
    if (const auto limit = cgroup_number(dir + "/" + limit_file)) {
      s.cgroup_limit = limit;
      s.cgroup_usage = cgroup_number(dir + "/" + usage_file);
      return true;
    }
    if (dir.size() == root.size()) break;
    dir = dir.substr(0, dir.rfind('/'));
  }
  return false;
}


}  // namespace

std::string format_gb(double bytes) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(bytes < 0.995e9 ? 3 : 2);
  out << bytes / 1e9 << " GB";
  return out.str();
}

ProcessMemory process_memory() {
  ProcessMemory m;
  m.resident_bytes = proc_kib_field("/proc/self/status", "VmRSS").value_or(0);
  m.peak_resident_bytes = proc_kib_field("/proc/self/status", "VmHWM").value_or(m.resident_bytes);
  return m;
}

SystemMemory system_memory() {
  SystemMemory s;
  s.mem_available = proc_kib_field("/proc/meminfo", "MemAvailable");
  const CgroupDirs dirs = cgroup_dirs();
  if (dirs.v2.empty() || !find_limit(dirs.v2, "/sys/fs/cgroup", "memory.max", "memory.current", s)) {
    if (!dirs.v1.empty())
      find_limit(dirs.v1, "/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", s);
  }
  const double own = process_memory().resident_bytes;
  std::optional<double> free_now = s.mem_available;
  if (s.cgroup_limit) {
    const double cgroup_free = std::max(0.0, *s.cgroup_limit - s.cgroup_usage.value_or(0));
    free_now = free_now ? std::min(*free_now, cgroup_free) : cgroup_free;
  }
  if (free_now) s.available_to_process = *free_now + own;
  return s;
}

std::string SystemMemory::describe() const {
  std::string out;
  if (mem_available) out = "MemAvailable " + format_gb(*mem_available);
  if (cgroup_limit) {
    out += cat(out.empty() ? "" : ", ", "cgroup limit ", format_gb(*cgroup_limit));
    if (cgroup_usage) out += " (using " + format_gb(*cgroup_usage) + ")";
  }
  return out.empty() ? "no memory figures readable" : out;
}

}  // namespace otter

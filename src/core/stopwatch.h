#pragma once
// Wall time on the monotonic clock, the one every timing otter reports uses.
#include <chrono>

namespace otter {

using SteadyClock = std::chrono::steady_clock;

inline double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

}  // namespace otter

#pragma once
// Prometheus text exposition of the server's state (GET /metrics): queue depth, jobs by state,
// UNet rows and calls (rows/s), the step-latency and batch-size histograms, resident memory.
#include <cstdint>
#include <string>
#include <vector>

namespace otter::serve {

// A cumulative histogram with fixed upper bounds (the +Inf bucket is count).
struct Histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // per bound: observations <= bound (not cumulative; rendered cumulatively)
  uint64_t count = 0;
  double sum = 0;
  explicit Histogram(std::vector<double> b = {}) : bounds(std::move(b)), counts(bounds.size(), 0) {}
  void observe(double v) {
    ++count;
    sum += v;
    for (size_t i = 0; i < bounds.size(); ++i)
      if (v <= bounds[i]) {
        ++counts[i];
        break;
      }
  }
};

struct ServiceCounters;

std::string prometheus_text(const ServiceCounters& c, uint64_t resident_bytes, int loaded_models);

}  // namespace otter::serve

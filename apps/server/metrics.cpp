#include "metrics.h"

#include <sstream>

#include "generation_service.h"

namespace otter::serve {
namespace {

void metric(std::ostringstream& o, const char* name, const char* type, const char* help) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
}

void histogram(std::ostringstream& o, const char* name, const char* help, const Histogram& h) {
  metric(o, name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    o << name << "_bucket{le=\"" << h.bounds[i] << "\"} " << cumulative << "\n";
  }
  o << name << "_bucket{le=\"+Inf\"} " << h.count << "\n" << name << "_sum " << h.sum << "\n" << name << "_count " << h.count << "\n";
}

}  // namespace

std::string prometheus_text(const ServiceCounters& c, uint64_t resident_bytes, int loaded_models) {
  std::ostringstream o;
  metric(o, "otter_queue_depth", "gauge", "Jobs waiting to start.");
  o << "otter_queue_depth " << c.queued << "\n";
  metric(o, "otter_jobs", "gauge", "Jobs by state now (finished ones while their results are kept).");
  o << "otter_jobs{state=\"queued\"} " << c.queued << "\notter_jobs{state=\"running\"} " << c.running
    << "\notter_jobs{state=\"kept\"} " << c.kept << "\n";
  metric(o, "otter_jobs_total", "counter", "Jobs by how they ended, and submitted or refused (queue full).");
  o << "otter_jobs_total{state=\"submitted\"} " << c.submitted << "\notter_jobs_total{state=\"succeeded\"} "
    << c.succeeded << "\notter_jobs_total{state=\"failed\"} " << c.failed << "\notter_jobs_total{state=\"cancelled\"} "
    << c.cancelled << "\notter_jobs_total{state=\"refused\"} " << c.refused << "\n";
  metric(o, "otter_images_total", "counter", "Images made.");
  o << "otter_images_total " << c.images << "\n";
  metric(o, "otter_unet_calls_total", "counter", "UNet calls (each over the rows of every job batched in it).");
  o << "otter_unet_calls_total " << c.batcher.calls << "\n";
  metric(o, "otter_unet_rows_total", "counter", "UNet batch rows evaluated.");
  o << "otter_unet_rows_total " << c.batcher.rows << "\n";
  metric(o, "otter_unet_seconds_total", "counter", "Seconds spent in UNet calls.");
  o << "otter_unet_seconds_total " << c.batcher.seconds << "\n";
  metric(o, "otter_unet_rows_per_second", "gauge", "UNet rows per second of UNet time, since the start.");
  o << "otter_unet_rows_per_second " << (c.batcher.seconds > 0 ? static_cast<double>(c.batcher.rows) / c.batcher.seconds : 0.0)
    << "\n";
  Histogram rows({1, 2, 4, 8, 16, 32, 64});
  for (size_t k = 0; k < c.batcher.rows_per_call.size(); ++k)
    for (uint64_t n = 0; n < c.batcher.rows_per_call[k]; ++n) rows.observe(static_cast<double>(k));
  histogram(o, "otter_batch_rows", "UNet rows per call.", rows);
  histogram(o, "otter_step_seconds", "Wall time of one sampler step of one job (its wait for the batched call included).",
            c.step_seconds);
  metric(o, "otter_models_loaded", "gauge", "Models loaded now.");
  o << "otter_models_loaded " << loaded_models << "\n";
  metric(o, "otter_resident_memory_bytes", "gauge", "Resident set size of the server process.");
  o << "otter_resident_memory_bytes " << resident_bytes << "\n";
  return o.str();
}

}  // namespace otter::serve

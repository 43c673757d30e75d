#pragma once
// The server's engine: a bounded queue of generation jobs, admitted while the rows of the running
// jobs leave room (--max-batch-rows), each run on its own thread through txt2img with its UNet
// calls merged into the batcher's (unet_batcher.h), finished jobs kept for a while then dropped.
// Everything the HTTP layer needs: submit, find, cancel, interrupt, counters for /metrics, and a
// bounded shutdown.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "generation_job.h"
#include "metrics.h"
#include "model_registry.h"
#include "unet_batcher.h"

namespace otter::serve {

struct ServiceOptions {
  int max_queue = 32;                 // jobs waiting to start; more is refused (429)
  int64_t max_batch_rows = 16;        // UNet rows of running jobs together (one job may exceed it alone)
  bool batching = true;               // false: every job's UNet calls run alone (--no-batching)
  double keep_results_seconds = 600;  // finished jobs are dropped after this long …
  size_t max_kept = 256;              // … or when more than this many are kept (oldest first)
  std::string precision_name;         // recorded in each PNG, as otter generate does
};

struct QueueFull {
  int retry_after_seconds = 1;
};

struct ServiceCounters {
  size_t queued = 0, running = 0, kept = 0;
  uint64_t succeeded = 0, failed = 0, cancelled = 0, submitted = 0, refused = 0;
  uint64_t images = 0;
  BatcherStats batcher;
  Histogram step_seconds{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
};

class GenerationService {
 public:
  GenerationService(ModelRegistry& models, Backend& backend, std::mutex& device, ServiceOptions options);
  ~GenerationService();  // shutdown(0) if not done

  // Queues a job; throws QueueFull when the queue is full, otter::Error when stopping.
  std::shared_ptr<GenerationJob> submit(GenerationSpec spec);
  std::shared_ptr<GenerationJob> find(const std::string& id) const;
  // The running (else most recent) job of an API, for the webui's single-job /progress.
  std::shared_ptr<GenerationJob> current(const std::string& api) const;
  void interrupt_all(const std::string& api);

  ServiceCounters counters() const;
  // Runs `f` holding the device (the lab: one batched pass of its own between other jobs' steps).
  void with_device(const std::function<void()>& f);
  ModelRegistry& models() { return models_; }
  const ServiceOptions& options() const { return options_; }

  // Stops accepting; queued jobs are cancelled; running ones get `grace` to finish, then are
  // cancelled at their next step; returns when every worker has ended.
  void shutdown(std::chrono::milliseconds grace);

 private:
  void dispatch();                                  // the admission thread
  void work(std::shared_ptr<GenerationJob> job);    // one job's thread
  void drop_old_results();                          // under mutex_

  ModelRegistry& models_;
  Backend& backend_;
  std::mutex& device_;
  ServiceOptions options_;
  UNetBatcher batcher_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::shared_ptr<GenerationJob>> queue_;
  std::map<std::string, std::shared_ptr<GenerationJob>> jobs_;  // every job not yet dropped
  std::map<uint64_t, std::thread> workers_;
  std::vector<uint64_t> ended_workers_;  // joined by the dispatcher
  int64_t running_rows_ = 0;
  size_t running_ = 0;
  uint64_t next_number_ = 1;
  bool stopping_ = false, stopped_ = false;
  ServiceCounters totals_;
  std::thread dispatcher_;
};

}  // namespace otter::serve

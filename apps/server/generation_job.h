#pragma once
// One generation request as the server runs it: what was asked (a txt2img request, possibly
// several batches one after another: the webui's n_iter), where it is (queued, running at step k,
// finished), what it made (PNG bytes with their parameters, as `otter generate` writes them) and
// the latest preview. Shared between the HTTP handlers and the worker thread; every accessor locks.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/txt2img.h"

namespace otter::serve {

struct GenerationSpec {
  std::string model;           // "" = the server's default
  Txt2ImgRequest request;      // one prompt; images_per_prompt = batch size; width/height 0 = native
  int iterations = 1;          // batches one after another; batch i has seed + i·batch_size
  std::string api;             // "webui", "openai" or "jobs": which API asked (progress/interrupt are per API)
  std::vector<LoraSpec> loras;  // <lora:name:weight> tags of the prompt, resolved in --loras DIR
  int64_t rows() const;        // UNet rows the request takes at a step (its share of a batched call)
};

enum class JobState { Queued, Running, Succeeded, Failed, Cancelled };
const char* job_state_name(JobState s);

struct JobImage {
  std::vector<uint8_t> png;  // with its `parameters` chunk
  uint64_t seed = 0;
  std::string infotext;      // the parameters text
};

struct JobSnapshot {
  JobState state = JobState::Queued;
  int step = 0, steps = 0;        // UNet evaluations done and in all (all batches)
  double progress = 0;            // step / steps
  double eta_seconds = 0;
  double queued_seconds = 0, run_seconds = 0;
  bool interrupted = false;
  std::string error;
  std::string model;              // the model's name, once known
  std::string sampler;
  int width = 0, height = 0;
  uint64_t version = 0;           // bumped at every change (SSE waits on it)
  size_t images = 0;
};

class GenerationJob {
 public:
  GenerationJob(uint64_t number, GenerationSpec spec);

  const std::string& id() const { return id_; }
  uint64_t number() const { return number_; }
  const GenerationSpec& spec() const { return spec_; }
  std::chrono::system_clock::time_point created_wall() const { return created_wall_; }

  JobSnapshot snapshot() const;
  std::vector<JobImage> images() const;
  std::vector<uint8_t> preview_png() const;  // the latest step's preview ("" before the first)
  bool finished() const;

  // Waits until the job changed past `version` or finished, at most `timeout`; returns the snapshot.
  JobSnapshot wait_change(uint64_t version, std::chrono::milliseconds timeout) const;
  JobSnapshot wait_finished(std::chrono::milliseconds timeout) const;

  // Cancel: stop at the next step, no images (DELETE /v1/jobs/{id}, a client that went away).
  // Interrupt: stop at the next step and decode what is there (the webui's /interrupt).
  void cancel();
  void interrupt();
  bool cancel_requested() const;
  bool interrupt_requested() const;

  // Worker side.
  void set_running(const std::string& model, const std::string& sampler, int width, int height, int steps);
  void set_step(int step, std::vector<uint8_t> preview_png);
  void add_image(JobImage image);
  void finish(JobState state, std::string error = {});
  std::chrono::steady_clock::time_point finished_at() const;

 private:
  void changed();           // under mutex_
  bool done_locked() const;  // under mutex_

  const uint64_t number_;
  const std::string id_;
  const GenerationSpec spec_;
  const std::chrono::system_clock::time_point created_wall_;
  const std::chrono::steady_clock::time_point created_;
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  JobSnapshot s_;
  std::chrono::steady_clock::time_point started_, finished_;
  std::vector<JobImage> images_;
  std::vector<uint8_t> preview_;
  bool cancel_ = false, interrupt_ = false;
};

}  // namespace otter::serve

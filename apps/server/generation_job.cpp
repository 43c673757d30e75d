#include "generation_job.h"

#include <cstdio>

namespace otter::serve {
namespace {

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

int64_t GenerationSpec::rows() const {
  return static_cast<int64_t>(unet_rows_per_image(request)) * request.images_per_prompt *
         static_cast<int64_t>(request.prompts.size());
}

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::Queued: return "queued";
    case JobState::Running: return "running";
    case JobState::Succeeded: return "succeeded";
    case JobState::Failed: return "failed";
    case JobState::Cancelled: return "cancelled";
  }
  return "?";
}

GenerationJob::GenerationJob(uint64_t number, GenerationSpec spec)
    : number_(number),
      id_([&] {
        char buf[32];
        std::snprintf(buf, sizeof buf, "job-%06llu", static_cast<unsigned long long>(number));
        return std::string(buf);
      }()),
      spec_(std::move(spec)),
      created_wall_(std::chrono::system_clock::now()),
      created_(std::chrono::steady_clock::now()) {}

void GenerationJob::changed() {
  ++s_.version;
  cv_.notify_all();
}

JobSnapshot GenerationJob::snapshot() const {
  std::lock_guard lock(mutex_);
  JobSnapshot s = s_;
  const auto now = std::chrono::steady_clock::now();
  if (s.state == JobState::Queued) {
    s.queued_seconds = seconds(now - created_);
  } else {
    s.queued_seconds = seconds(started_ - created_);
    s.run_seconds = seconds((done_locked() ? finished_ : now) - started_);
  }
  if (s.state == JobState::Running && s.step > 0) s.eta_seconds = s.run_seconds / s.step * (s.steps - s.step);
  s.images = images_.size();
  return s;
}

bool GenerationJob::finished() const {
  std::lock_guard lock(mutex_);
  return done_locked();
}

bool GenerationJob::done_locked() const {
  return s_.state == JobState::Succeeded || s_.state == JobState::Failed || s_.state == JobState::Cancelled;
}

std::vector<JobImage> GenerationJob::images() const {
  std::lock_guard lock(mutex_);
  return images_;
}

std::vector<uint8_t> GenerationJob::preview_png() const {
  std::lock_guard lock(mutex_);
  return preview_;
}

JobSnapshot GenerationJob::wait_change(uint64_t version, std::chrono::milliseconds timeout) const {
  {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return s_.version > version || done_locked(); });
  }
  return snapshot();
}

JobSnapshot GenerationJob::wait_finished(std::chrono::milliseconds timeout) const {
  {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return done_locked(); });
  }
  return snapshot();
}

void GenerationJob::cancel() {
  std::lock_guard lock(mutex_);
  cancel_ = true;
  changed();
}

void GenerationJob::interrupt() {
  std::lock_guard lock(mutex_);
  interrupt_ = true;
  s_.interrupted = true;
  changed();
}

bool GenerationJob::cancel_requested() const {
  std::lock_guard lock(mutex_);
  return cancel_;
}

bool GenerationJob::interrupt_requested() const {
  std::lock_guard lock(mutex_);
  return interrupt_;
}

void GenerationJob::set_running(const std::string& model, const std::string& sampler, int width, int height, int steps) {
  std::lock_guard lock(mutex_);
  started_ = std::chrono::steady_clock::now();
  s_.state = JobState::Running;
  s_.model = model;
  s_.sampler = sampler;
  s_.width = width;
  s_.height = height;
  s_.steps = steps;
  changed();
}

void GenerationJob::set_step(int step, std::vector<uint8_t> preview_png) {
  std::lock_guard lock(mutex_);
  s_.step = step;
  s_.progress = s_.steps > 0 ? static_cast<double>(step) / s_.steps : 0.0;
  if (!preview_png.empty()) preview_ = std::move(preview_png);
  changed();
}

void GenerationJob::add_image(JobImage image) {
  std::lock_guard lock(mutex_);
  images_.push_back(std::move(image));
  changed();
}

void GenerationJob::finish(JobState state, std::string error) {
  std::lock_guard lock(mutex_);
  if (s_.state == JobState::Queued) started_ = std::chrono::steady_clock::now();
  finished_ = std::chrono::steady_clock::now();
  s_.state = state;
  s_.error = std::move(error);
  if (state == JobState::Succeeded) s_.progress = 1.0;
  changed();
}

std::chrono::steady_clock::time_point GenerationJob::finished_at() const {
  std::lock_guard lock(mutex_);
  return finished_;
}

}  // namespace otter::serve

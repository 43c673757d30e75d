#include "generation_service.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "io/generation_parameters.h"
#include "io/png.h"
#include "pipeline/image_output.h"
#include "sampling/sampler.h"

namespace otter::serve {
namespace {

struct Cancelled {};
struct Interrupted {};

// The preview of the first image at a step: its x̂0 through the model's cheap map, as PNG bytes,
// at most ~128 pixels on a side.
std::vector<uint8_t> preview_png(const LoadedModel& m, PredictionType type, float sigma, const Tensor& x_in,
                                 const Tensor& eps) {
  if (!m.preview) return {};
  const Tensor x0 = predicted_clean(type, sigma, x_in.slice(0, 0, 1), eps.slice(0, 0, 1)).squeeze_front();
  const int64_t side = std::max(x0.dim(1), x0.dim(2));
  const int scale = static_cast<int>(std::clamp<int64_t>(128 / side, 1, 8));
  const Tensor rgb = m.preview->map.preview(x0, scale);
  return encode_png(rgb.data<uint8_t>(), static_cast<int>(rgb.dim(1)), static_cast<int>(rgb.dim(0)), {});
}

}  // namespace

GenerationService::GenerationService(ModelRegistry& models, Backend& backend, std::mutex& device, ServiceOptions options)
    : models_(models),
      backend_(backend),
      device_(device),
      options_(std::move(options)),
      batcher_(device, backend, options_.max_batch_rows, options_.batching) {
  dispatcher_ = std::thread([this] { dispatch(); });
}

GenerationService::~GenerationService() { shutdown(std::chrono::milliseconds(0)); }

std::shared_ptr<GenerationJob> GenerationService::submit(GenerationSpec spec) {
  std::lock_guard lock(mutex_);
  OTTER_CHECK(!stopping_, "the server is stopping");
  if (static_cast<int>(queue_.size()) >= options_.max_queue) {
    ++totals_.refused;
    // A rough wait: the jobs ahead, a second each at least.
    throw QueueFull{std::max(1, static_cast<int>(queue_.size() / std::max<size_t>(1, running_)))};
  }
  auto job = std::make_shared<GenerationJob>(next_number_++, std::move(spec));
  queue_.push_back(job);
  jobs_[job->id()] = job;
  ++totals_.submitted;
  changed_.notify_all();
  return job;
}

std::shared_ptr<GenerationJob> GenerationService::find(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

std::shared_ptr<GenerationJob> GenerationService::current(const std::string& api) const {
  std::lock_guard lock(mutex_);
  std::shared_ptr<GenerationJob> running, latest;
  for (const auto& [id, job] : jobs_) {
    if (job->spec().api != api) continue;
    const JobState s = job->snapshot().state;
    if (s == JobState::Running && (!running || job->number() < running->number())) running = job;
    if (!latest || job->number() > latest->number()) latest = job;
  }
  return running ? running : latest;
}

void GenerationService::interrupt_all(const std::string& api) {
  std::lock_guard lock(mutex_);
  for (const auto& [id, job] : jobs_)
    if (job->spec().api == api && !job->finished()) job->interrupt();
}

ServiceCounters GenerationService::counters() const {
  std::lock_guard lock(mutex_);
  ServiceCounters c = totals_;
  c.queued = queue_.size();
  c.running = running_;
  c.kept = jobs_.size();
  c.batcher = batcher_.stats();
  return c;
}

void GenerationService::with_device(const std::function<void()>& f) {
  std::lock_guard device(device_);
  f();
}

void GenerationService::drop_old_results() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::string>> done;
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (!it->second->finished()) {
      ++it;
      continue;
    }
    const auto at = it->second->finished_at();
    if (std::chrono::duration<double>(now - at).count() > options_.keep_results_seconds) {
      it = jobs_.erase(it);
    } else {
      done.emplace_back(at, it->first);
      ++it;
    }
  }
  if (done.size() > options_.max_kept) {
    std::sort(done.begin(), done.end());
    for (size_t i = 0; i < done.size() - options_.max_kept; ++i) jobs_.erase(done[i].second);
  }
}

void GenerationService::dispatch() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait_for(lock, std::chrono::seconds(1));
    while (!ended_workers_.empty()) {
      const uint64_t n = ended_workers_.back();
      ended_workers_.pop_back();
      std::thread t = std::move(workers_.at(n));
      workers_.erase(n);
      lock.unlock();
      t.join();
      lock.lock();
    }
    drop_old_results();
    if (stopped_ && workers_.empty()) return;
    while (!stopping_ && !queue_.empty() &&
           (running_ == 0 || running_rows_ + queue_.front()->spec().rows() <= options_.max_batch_rows)) {
      std::shared_ptr<GenerationJob> job = queue_.front();
      queue_.pop_front();
      if (job->cancel_requested()) {
        job->finish(JobState::Cancelled, "cancelled before it started");
        ++totals_.cancelled;
        continue;
      }
      ++running_;
      running_rows_ += job->spec().rows();
      workers_[job->number()] = std::thread([this, job] { work(job); });
    }
  }
}

void GenerationService::work(std::shared_ptr<GenerationJob> job) {
  const GenerationSpec& spec = job->spec();
  JobState end = JobState::Succeeded;
  std::string error;
  try {
    const std::shared_ptr<LoadedModel> model =
        models_.acquire(spec.model.empty() ? models_.default_name() : spec.model, spec.loras);
    StableDiffusion& sd = *model->model;
    Txt2ImgRequest request = spec.request;
    if (request.width == 0) request.width = model->native_size;
    if (request.height == 0) request.height = model->native_size;
    const SchedulerConfig& scheduler = sd.scheduler_config();
    if (request.sampler.empty()) request.sampler = default_sampler_for(scheduler);
    std::unique_ptr<Sampler> sampler = make_sampler(request.sampler, scheduler, request.sampler_options);
    sampler->set_timesteps(request.steps);
    const std::vector<Evaluation> plan = plan_evaluations(*sampler, request.steps);
    // Image to image runs the evaluations from its first one on (txt2img's on_step counts in the
    // whole schedule).
    const int first = first_evaluation(request, *sampler);
    const int evaluations = sampler->num_evaluations() - first;
    const PredictionType prediction = sampler->prediction_type();
    job->set_running(model->name, request.sampler, request.width, request.height, evaluations * spec.iterations);
    const int64_t batch = request.images_per_prompt * static_cast<int64_t>(request.prompts.size());
    std::vector<std::pair<std::string, std::string>> extra{{"Precision", options_.precision_name}};
    if (!spec.loras.empty()) extra.emplace_back("LoRA", describe_loras(spec.loras));

    std::unique_lock device(device_);
    for (int it = 0; it < spec.iterations; ++it) {
      Txt2ImgRequest r = request;
      r.seed = request.seed + static_cast<uint64_t>(it) * static_cast<uint64_t>(batch);
      Tensor last_latents;
      Txt2ImgTrace trace;
      trace.unet = [&](const Tensor& x, float t, const Tensor& context, const RowPerturbation* perturbation) {
        device.unlock();  // other jobs run while this one waits for the batched call
        try {
          Tensor out = batcher_.evaluate(job->number(), sd.unet(), x, t, context, perturbation);
          device.lock();
          return out;
        } catch (...) {
          device.lock();
          throw;
        }
      };
      trace.denoise_end = [&] { batcher_.leave(job->number()); };
      trace.on_step = [&](int k, const Tensor& x_in, const Tensor& eps, const Tensor& latents) {
        // Kept for an interrupt; one buffer per batch, filled in place (no allocation per step).
        if (!last_latents.defined()) last_latents = Tensor::empty(latents.shape(), latents.dtype());
        std::memcpy(last_latents.raw(), latents.contiguous().raw(), last_latents.nbytes());
        job->set_step(it * evaluations + (k - first) + 1,
                      preview_png(*model, prediction, plan[static_cast<size_t>(k)].sigma, x_in, eps));
      };
      const StepCallback progress = [&](const StepReport& s) {
        {
          std::lock_guard lock(mutex_);
          totals_.step_seconds.observe(s.seconds);
        }
        if (job->cancel_requested()) throw Cancelled{};
        if (job->interrupt_requested()) throw Interrupted{};
      };
      Txt2ImgResult result;
      bool interrupted = false;
      try {
        result = txt2img(sd, r, progress, trace);
      } catch (const Interrupted&) {
        // The webui's interrupt: what the latents hold now, decoded.
        interrupted = true;
        if (!last_latents.defined()) break;
        result.sampler = r.sampler;
        result.final_latents = last_latents;
        result.image = to_uint8_image(sd.vae().decode(backend_, last_latents));
      }
      for (int64_t b = 0; b < result.image.dim(0); ++b) {
        GenerationParameters p = describe_generation(r, result, sd.files().name, static_cast<int>(b));
        p.extra.insert(p.extra.end(), extra.begin(), extra.end());
        job->add_image({encode_image_png(r, result, sd.files().name, static_cast<int>(b), extra), r.seed,
                        format_parameters(p)});
      }
      if (interrupted) break;
    }
  } catch (const Cancelled&) {
    end = JobState::Cancelled;
    error = "cancelled";
  } catch (const std::exception& e) {
    end = JobState::Failed;
    error = e.what();
  }
  batcher_.leave(job->number());  // in case the loop never started
  job->finish(end, error);
  std::lock_guard lock(mutex_);
  --running_;
  running_rows_ -= spec.rows();
  if (end == JobState::Succeeded) ++totals_.succeeded, totals_.images += job->snapshot().images;
  if (end == JobState::Failed) ++totals_.failed;
  if (end == JobState::Cancelled) ++totals_.cancelled;
  ended_workers_.push_back(job->number());
  changed_.notify_all();
}

void GenerationService::shutdown(std::chrono::milliseconds grace) {
  std::unique_lock lock(mutex_);
  if (stopped_) return;
  stopping_ = true;
  for (const auto& job : queue_) {
    job->finish(JobState::Cancelled, "the server stopped before it started");
    ++totals_.cancelled;
  }
  queue_.clear();
  changed_.wait_for(lock, grace, [&] { return running_ == 0; });
  for (const auto& [id, job] : jobs_)
    if (!job->finished()) job->cancel();
  changed_.wait(lock, [&] { return running_ == 0; });
  stopped_ = true;
  changed_.notify_all();
  lock.unlock();
  dispatcher_.join();
}

}  // namespace otter::serve

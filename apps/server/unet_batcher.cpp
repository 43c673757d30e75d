#include "unet_batcher.h"

#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/stopwatch.h"
#include "guidance/noise_prediction.h"  // concat_rows

namespace otter::serve {
namespace {

constexpr size_t kHistogramSize = 65;

}  // namespace

UNetBatcher::UNetBatcher(std::mutex& device, Backend& backend, int64_t max_rows, bool batching)
    : device_(device), backend_(backend), max_rows_(max_rows), batching_(batching) {
  stats_.rows_per_call.assign(kHistogramSize, 0);
  thread_ = std::thread([this] { run(); });
}

UNetBatcher::~UNetBatcher() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

Tensor UNetBatcher::evaluate(uint64_t job, UNet& unet, const Tensor& x, float t, const Tensor& context,
                             const RowPerturbation* perturbation) {
  OTTER_CHECK(x.rank() == 4 && context.rank() == 3 && context.dim(0) == x.dim(0), "batcher: latents ",
              x.shape().str(), " and text states ", context.shape().str(), " do not pair up row by row");
  Pending p{job, &unet, x, context, t, perturbation, {}, nullptr, false};
  std::unique_lock lock(mutex_);
  OTTER_CHECK(!stop_, "the server is stopping");
  const Key key{&unet, x.dim(1), x.dim(2), x.dim(3), context.dim(1), context.dim(2)};
  Member& m = members_[job];
  m.key = key;  // a request's size is fixed; its text length may differ between turns
  m.pending = &p;
  order_.push_back(&p);
  changed_.notify_all();
  changed_.wait(lock, [&] { return p.done; });
  if (p.error) std::rethrow_exception(p.error);
  return p.out;
}

void UNetBatcher::leave(uint64_t job) {
  {
    std::lock_guard lock(mutex_);
    members_.erase(job);
  }
  changed_.notify_all();  // its group may now be complete
}

BatcherStats UNetBatcher::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

std::vector<UNetBatcher::Pending*> UNetBatcher::next_call() {
  std::vector<Pending*> call;
  if (order_.empty()) return call;
  if (!batching_) {
    call.push_back(order_.front());
    order_.pop_front();
    return call;
  }
  // The oldest waiting call whose whole group is waiting decides which group runs.
  for (Pending* candidate : order_) {
    const Key& key = members_.at(candidate->job).key;
    bool ready = true;
    for (const auto& [job, m] : members_)
      if (m.key == key && m.pending == nullptr) ready = false;
    if (!ready) continue;
    int64_t rows = 0;
    for (auto it = order_.begin(); it != order_.end();) {
      Pending* q = *it;
      if (members_.at(q->job).key == key && (call.empty() || rows + q->x.dim(0) <= max_rows_)) {
        rows += q->x.dim(0);
        call.push_back(q);
        it = order_.erase(it);
      } else {
        ++it;
      }
    }
    return call;
  }
  return call;
}

void UNetBatcher::execute(std::vector<Pending*>& call) {
  const auto t0 = SteadyClock::now();
  int64_t rows = 0;
  try {
    std::lock_guard device(device_);
    UNet& unet = *call[0]->unet;
    if (call.size() == 1) {
      // Alone: exactly the call txt2img makes by itself.
      Pending& p = *call[0];
      p.out = unet.forward(backend_, p.x, p.t, p.context, {}, p.perturbation);
      rows = p.x.dim(0);
    } else {
      std::vector<const Tensor*> xs, contexts;
      std::vector<float> timesteps;
      std::deque<RowPerturbation> chain;  // every request's perturbations, rows shifted to its place
      for (Pending* p : call) {
        for (const RowPerturbation* r = p->perturbation; r != nullptr; r = r->next) {
          RowPerturbation shifted = *r;
          shifted.row_begin += rows;
          shifted.row_end += rows;
          shifted.next = nullptr;
          chain.push_back(shifted);
        }
        xs.push_back(&p->x);
        contexts.push_back(&p->context);
        timesteps.insert(timesteps.end(), static_cast<size_t>(p->x.dim(0)), p->t);
        rows += p->x.dim(0);
      }
      for (size_t i = 0; i + 1 < chain.size(); ++i) chain[i].next = &chain[i + 1];
      Tensor t = Tensor::empty(Shape{rows}, DType::F32);
      std::memcpy(t.f32(), timesteps.data(), timesteps.size() * sizeof(float));
      const Tensor out = unet.forward(backend_, concat_rows(xs), t, concat_rows(contexts), {},
                                      chain.empty() ? nullptr : &chain.front());
      int64_t r0 = 0;
      for (Pending* p : call) {
        p->out = out.slice(0, r0, r0 + p->x.dim(0)).contiguous().clone();
        r0 += p->x.dim(0);
      }
    }
  } catch (...) {
    for (Pending* p : call) p->error = std::current_exception();
  }
  std::lock_guard lock(mutex_);
  ++stats_.calls;
  stats_.rows += static_cast<uint64_t>(rows);
  stats_.seconds += seconds_since(t0);
  ++stats_.rows_per_call[std::min(static_cast<size_t>(rows), kHistogramSize - 1)];
  for (Pending* p : call) {
    p->done = true;
    // No longer waiting: until its thread asks again, its group is not ready without it.
    members_.at(p->job).pending = nullptr;
  }
}

void UNetBatcher::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    std::vector<Pending*> call;
    changed_.wait(lock, [&] { return stop_ || !(call = next_call()).empty(); });
    if (call.empty()) {  // stopping: fail whatever still waits
      for (Pending* p : order_) {
        p->error = std::make_exception_ptr(Error("the server is stopping"));
        p->done = true;
        members_.at(p->job).pending = nullptr;
      }
      order_.clear();
      changed_.notify_all();
      return;
    }
    lock.unlock();
    execute(call);
    changed_.notify_all();
    lock.lock();
  }
}

}  // namespace otter::serve

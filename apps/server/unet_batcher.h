#pragma once
// Continuous batching: ONE UNet call over the rows of every running request that shares a model,
// a latent size and a text length — each request at its own step, with its own timestep (the
// UNet takes one per row), text states, guider and sampler state. Each request runs its own
// txt2img loop on its own thread; its UNet call comes here (Txt2ImgTrace::unet), waits until every
// other request of its group has also asked for its next call, and gets back its rows of the one
// call. A request that starts joins its group at its first call: new requests are admitted
// between steps. A request whose loop ends leaves (it is no longer waited for).
//
// Fairness between groups (other sizes or models): the groups whose members have all asked take
// turns, one UNet call each, in the order they became ready (round robin); a group with more rows
// than --max-batch-rows runs in several calls of whole requests.
//
// A row's prediction is the same bits as when its request runs alone where the kernels give each
// row the same arithmetic whatever the batch (checked by the tests on the bundled model); the
// timestep embedding is made so (models/blocks.h, linear_per_distinct_row).
//
// All backend work happens under `device` (one model computation at a time: each one already
// uses every core). A request's thread holds it while it runs its own work (text encoding,
// guidance, sampler step, decode) and releases it while it waits here.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "models/row_perturbation.h"
#include "models/unet.h"

namespace otter::serve {

struct BatcherStats {
  uint64_t calls = 0, rows = 0;
  double seconds = 0;
  std::vector<uint64_t> rows_per_call;  // histogram: [k] = calls with k rows (k capped at its size - 1)
};

class UNetBatcher {
 public:
  // batching = false (--no-batching): every call runs alone, in the order asked.
  UNetBatcher(std::mutex& device, Backend& backend, int64_t max_rows, bool batching);
  ~UNetBatcher();
  UNetBatcher(const UNetBatcher&) = delete;
  UNetBatcher& operator=(const UNetBatcher&) = delete;

  // From request `job`'s thread, NOT holding `device`: the UNet prediction for x [B, C, h, w] at
  // timestep t with text states `context` [B, T, D] (and the request's perturbation chain).
  Tensor evaluate(uint64_t job, UNet& unet, const Tensor& x, float t, const Tensor& context,
                  const RowPerturbation* perturbation);
  // Request `job`'s loop has ended: its group no longer waits for it.
  void leave(uint64_t job);

  BatcherStats stats() const;

 private:
  struct Key {
    const UNet* unet;
    int64_t channels, h, w, tokens, width;
    auto operator<=>(const Key&) const = default;
  };
  struct Pending {
    uint64_t job;
    UNet* unet;
    Tensor x, context;
    float t;
    const RowPerturbation* perturbation;
    Tensor out;
    std::exception_ptr error;
    bool done = false;
  };
  struct Member {
    Key key;
    Pending* pending = nullptr;  // set while the member waits
  };

  void run();
  // The pending calls of the next group to run (empty if none is ready); called under mutex_.
  std::vector<Pending*> next_call();
  void execute(std::vector<Pending*>& call);

  std::mutex& device_;
  Backend& backend_;
  const int64_t max_rows_;
  const bool batching_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<uint64_t, Member> members_;
  std::deque<Pending*> order_;  // pending calls in the order asked (round robin between groups)
  bool stop_ = false;
  BatcherStats stats_;
  std::thread thread_;
};

}  // namespace otter::serve

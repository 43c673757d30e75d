#include "core/allocator.h"

#include <malloc.h>

#include <cstdlib>
#include <new>

namespace otter {

Allocator::~Allocator() { free_cached(); }

Allocator& Allocator::global() {
  // Never destroyed: tensors held in static objects may be released during exit.
  static Allocator* instance = new Allocator();
  return *instance;
}

size_t Allocator::size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  // Multiples of 64 bytes up to 64 KiB, then multiples of 4 KiB: sizes that recur every step map
  // to the same class, and the rounding wastes at most ~6%.
  const size_t granule = bytes <= 65536 ? kAlignment : 4096;
  return (bytes + granule - 1) / granule * granule;
}

void* Allocator::allocate(size_t bytes) {
  const size_t size = size_class(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = free_.find(size);
  void* ptr = nullptr;
  if (it != free_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    stats_.cached_bytes -= size;
    ++stats_.reuses;
  } else {
    ptr = std::aligned_alloc(kAlignment, size);
    if (!ptr) throw std::bad_alloc();
    ++stats_.system_allocations;
  }
  stats_.live_bytes += size;
  if (stats_.live_bytes > stats_.peak_live_bytes) stats_.peak_live_bytes = stats_.live_bytes;
  return ptr;
}

void Allocator::release(void* ptr, size_t bytes) {
  if (!ptr) return;
  const size_t size = size_class(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  free_[size].push_back(ptr);
  stats_.live_bytes -= size;
  stats_.cached_bytes += size;
}

AllocatorStats Allocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void Allocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_live_bytes = stats_.live_bytes;
}

void Allocator::free_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, blocks] : free_)
    for (void* p : blocks) std::free(p);
  free_.clear();
  stats_.cached_bytes = 0;
}

void Allocator::trim() {
  free_cached();
  // glibc keeps freed heap memory for reuse; hand it back too, so RSS reflects what is live.
  malloc_trim(0);
}

}  // namespace otter

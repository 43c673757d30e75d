#include "core/allocator.h"

#include <malloc.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <new>

namespace otter {
namespace {

// Blocks from 4 MB up (activations at 512x512 are 10-270 MB) are mapped directly, 2 MB-aligned and
// marked for transparent huge pages: a first touch then faults in 2 MB at once instead of 4 KB.
// On this VM a 4 KB fault costs ~4 us, so a decode whose blocks were all fresh spent seconds in
// the kernel (a million faults for an f32 decode at 512x512).
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kMappedMin = size_t{4} << 20;

constexpr size_t kPage = 4096;

// Whole 4 KB pages, not whole huge pages: the kernel backs with huge pages only the aligned 2 MB
// ranges wholly inside a mapping, so a block's last partial one stays in 4 KB pages. Rounded up
// to 2 MB, the huge page past each big block's end was resident for nothing: 0.22 GB of SD 1.5's
// 3.44 GB of f32 UNet weights (132 blocks from 4 MB up), 6 % of the f32 run's peak.
size_t mapped_length(size_t size) { return (size + kPage - 1) / kPage * kPage; }

void* map_block(size_t size) {
  const size_t length = mapped_length(size);
  // Over-map by one huge page, then cut the unaligned head and the tail.
  void* raw = mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + length + kHugePage;
  if (end > aligned + length) munmap(reinterpret_cast<void*>(aligned + length), end - (aligned + length));
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, length, MADV_HUGEPAGE);  // advice only: where THP is off this is a no-op
  return p;
}

void* system_allocate(size_t size) {
  if (size >= kMappedMin) return map_block(size);
  void* p = std::aligned_alloc(Allocator::kAlignment, size);
  if (!p) throw std::bad_alloc();
  return p;
}

void system_free(void* p, size_t size) {
  if (size >= kMappedMin) {
    munmap(p, mapped_length(size));
  } else {
    std::free(p);
  }
}

}  // namespace

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
    ptr = system_allocate(size);
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
    for (void* p : blocks) system_free(p, size);
  free_.clear();
  stats_.cached_bytes = 0;
}

void Allocator::trim() {
  free_cached();
  // glibc keeps freed heap memory for reuse; hand it back too, so RSS reflects what is live.
  malloc_trim(0);
}

}  // namespace otter

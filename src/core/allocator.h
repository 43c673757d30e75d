#pragma once
// A caching allocator for tensor storage. Blocks are 64-byte aligned (a cache line, one AVX-512
// vector). Released blocks are kept in per-size free lists and handed out again, so a denoising
// loop, which asks for the same sizes every step, stops calling the system allocator after its
// first step. The statistics make that checkable in tests and benchmarks.
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace otter {

struct AllocatorStats {
  size_t live_bytes = 0;        // bytes handed out and not yet released
  size_t peak_live_bytes = 0;   // maximum of live_bytes since the last reset_peak()
  size_t cached_bytes = 0;      // bytes held in free lists, ready for reuse
  uint64_t system_allocations = 0;  // calls that had to go to the system allocator
  uint64_t reuses = 0;              // requests served from a free list
};

class Allocator {
 public:
  static constexpr size_t kAlignment = 64;

  Allocator() = default;
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // The allocator every tensor uses unless told otherwise.
  static Allocator& global();

  void* allocate(size_t bytes);
  void release(void* ptr, size_t bytes);

  AllocatorStats stats() const;
  void reset_peak();
  // Returns every cached block to the system. Blocks from 4 MB up are unmapped, so RSS drops at
  // once; the heap's free memory stays with glibc, ready for the next small allocation.
  void free_cached();
  // free_cached(), and asks glibc to return its free heap memory too (each page returned costs a
  // fault when used again, so not between the stages of one image).
  void trim();

  // Rounds a request to the size class the free lists use.
  static size_t size_class(size_t bytes);

 private:
  mutable std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

}  // namespace otter

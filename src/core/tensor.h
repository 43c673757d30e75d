#pragma once
// A strided view onto shared storage. Storage is either a block from the caching allocator or
// memory owned by someone else (an mmap'd safetensors file), kept alive through `keepalive`.
// Views (reshape, slice, permute) share storage and never copy; contiguous() and to() copy.
#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "core/allocator.h"
#include "core/dtype.h"
#include "core/shape.h"

namespace otter {

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Allocator* allocator = nullptr;           // set when the block came from an allocator
  std::shared_ptr<const void> keepalive;   // set for external memory (e.g. a file mapping)
  bool file_backed = false;                // a read-only mapping of a file: pages can be dropped and re-read
  ~Storage();
};

class Tensor {
 public:
  using Strides = std::array<int64_t, kMaxDims>;  // in elements

  Tensor() = default;

  // New uninitialised contiguous tensor from the allocator.
  static Tensor empty(const Shape& shape, DType dtype, Allocator& allocator = Allocator::global());
  static Tensor zeros(const Shape& shape, DType dtype, Allocator& allocator = Allocator::global());
  static Tensor full(const Shape& shape, float value);  // F32
  // A contiguous view of memory owned elsewhere; `keepalive` holds that memory alive.
  static Tensor wrap(const void* data, const Shape& shape, DType dtype, std::shared_ptr<const void> keepalive,
                     bool file_backed = false);

  // For a view of a read-only file mapping: tells the kernel this process no longer needs the
  // pages wholly inside this tensor (madvise DONTNEED), so they leave its resident set; touching
  // them again re-reads the file. Used once a backend has made its own copy of a weight (f16 in
  // the file -> f32 or bf16 in the backend's layout), so the checkpoint does not stay resident
  // beside it. A no-op for any other storage.
  void release_file_pages() const;

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const { return shape_.dim(i); }
  int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  const Strides& strides() const { return strides_; }
  int64_t stride(int i) const { return strides_[static_cast<size_t>(i < 0 ? i + rank() : i)]; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;

  void* raw() const;  // first element
  template <class T>
  T* data() const { return static_cast<T*>(raw()); }
  float* f32() const;  // checks dtype == F32

  // Views.
  Tensor reshape(const Shape& shape) const;               // requires contiguous
  Tensor slice(int dim, int64_t start, int64_t end) const;  // [start, end) along dim
  Tensor permute(std::initializer_list<int> order) const;
  Tensor squeeze_front() const { return reshape(drop_front()); }

  // Copies.
  Tensor contiguous() const;          // self if already contiguous
  Tensor clone() const;               // always a fresh contiguous copy
  // Converting copy (self if dtype matches and contiguous). Staging copies that should not stay in
  // the global allocator's cache pass a private allocator.
  Tensor to(DType dtype, Allocator& allocator = Allocator::global()) const;
  void copy_from(const Tensor& src);  // same shape; converts dtype; any strides

  std::string describe() const;  // "F32[2, 4, 8, 8]"

 private:
  Shape drop_front() const;
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes from storage start
  Shape shape_;
  Strides strides_{};
  DType dtype_ = DType::F32;
};

Tensor::Strides contiguous_strides(const Shape& shape);

}  // namespace otter

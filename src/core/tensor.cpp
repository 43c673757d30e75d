#include "core/tensor.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"

namespace otter {

Storage::~Storage() {
  if (allocator) allocator->release(data, bytes);
}

Tensor::Strides contiguous_strides(const Shape& shape) {
  Tensor::Strides s{};
  int64_t acc = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    s[static_cast<size_t>(i)] = acc;
    acc *= shape[i];
  }
  return s;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Allocator& allocator) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  t.storage_->data = allocator.allocate(t.storage_->bytes);
  t.storage_->allocator = &allocator;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Allocator& allocator) {
  Tensor t = empty(shape, dtype, allocator);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape, DType::F32);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value;
  return t;
}

Tensor Tensor::wrap(const void* data, const Shape& shape, DType dtype, std::shared_ptr<const void> keepalive,
                    bool file_backed) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = const_cast<void*>(data);
  t.storage_->bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  t.storage_->keepalive = std::move(keepalive);
  t.storage_->file_backed = file_backed;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

void Tensor::release_file_pages() const {
  if (!storage_ || !storage_->file_backed) return;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  // The view's byte range, shrunk to whole pages: neighbouring tensors may share the edge pages.
  const auto begin = reinterpret_cast<uintptr_t>(static_cast<char*>(storage_->data) + offset_);
  const auto end = begin + (is_contiguous() ? nbytes() : storage_->bytes - offset_);
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

bool Tensor::is_contiguous() const {
  const Strides c = contiguous_strides(shape_);
  for (int i = 0; i < rank(); ++i)
    if (shape_[i] != 1 && strides_[static_cast<size_t>(i)] != c[static_cast<size_t>(i)]) return false;
  return true;
}

void* Tensor::raw() const {
  OTTER_CHECK(storage_, "use of an undefined tensor");
  return static_cast<char*>(storage_->data) + offset_;
}

float* Tensor::f32() const {
  OTTER_CHECK(dtype_ == DType::F32, "expected an F32 tensor, got ", describe());
  return static_cast<float*>(raw());
}

Tensor Tensor::reshape(const Shape& shape) const {
  OTTER_CHECK(shape.numel() == numel(), "cannot reshape ", describe(), " to ", shape.str());
  OTTER_CHECK(is_contiguous(), "reshape needs a contiguous tensor, got a strided ", describe());
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::slice(int d, int64_t start, int64_t end) const {
  if (d < 0) d += rank();
  OTTER_CHECK(d >= 0 && d < rank(), "slice dimension ", d, " out of range for ", describe());
  OTTER_CHECK(0 <= start && start <= end && end <= shape_[d], "slice [", start, ", ", end, ") out of range for dim ",
              d, " of ", describe());
  Tensor t = *this;
  t.offset_ += static_cast<size_t>(start * strides_[static_cast<size_t>(d)]) * dtype_size(dtype_);
  t.shape_[d] = end - start;
  return t;
}

Tensor Tensor::permute(std::initializer_list<int> order) const {
  OTTER_CHECK(static_cast<int>(order.size()) == rank(), "permute needs ", rank(), " axes");
  Tensor t = *this;
  int i = 0;
  for (int axis : order) {
    t.shape_[i] = shape_[axis];
    t.strides_[static_cast<size_t>(i)] = strides_[static_cast<size_t>(axis)];
    ++i;
  }
  return t;
}

Shape Tensor::drop_front() const {
  OTTER_CHECK(rank() >= 1 && shape_[0] == 1, "squeeze_front needs a leading dimension of 1, got ", describe());
  std::vector<int64_t> v = shape_.to_vector();
  v.erase(v.begin());
  return Shape(v);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype, Allocator& allocator) const {
  if (dtype == dtype_ && is_contiguous()) return *this;
  Tensor t = empty(shape_, dtype, allocator);
  t.copy_from(*this);
  return t;
}

namespace {

// Visits the contiguous inner runs of a strided tensor: fn(element offset of run, run length).
template <class Fn>
void for_each_run(const Tensor& t, Fn&& fn) {
  const int r = t.rank();
  if (r == 0) { fn(int64_t{0}, int64_t{1}); return; }
  // Merge as many innermost dims as are contiguous.
  int inner = r - 1;
  int64_t run = t.dim(inner);
  bool unit = t.stride(inner) == 1 || t.dim(inner) == 1;
  if (unit) {
    while (inner > 0 && t.stride(inner - 1) == run) { --inner; run *= t.dim(inner); }
  } else {
    run = 1;
    inner = r;
  }
  const int outer_rank = inner;
  int64_t outer = 1;
  for (int i = 0; i < outer_rank; ++i) outer *= t.dim(i);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, off = 0;
    for (int i = outer_rank - 1; i >= 0; --i) {
      off += (rem % t.dim(i)) * t.stride(i);
      rem /= t.dim(i);
    }
    fn(off, run);
  }
}

}  // namespace

void Tensor::copy_from(const Tensor& src) {
  OTTER_CHECK(src.shape() == shape_, "copy_from shape mismatch: ", src.describe(), " into ", describe());
  const Tensor dst_c = is_contiguous() ? *this : Tensor();
  OTTER_CHECK(dst_c.defined(), "copy_from needs a contiguous destination");
  char* dst = static_cast<char*>(raw());
  const char* base = static_cast<const char*>(src.raw());
  const size_t in_size = dtype_size(src.dtype()), out_size = dtype_size(dtype_);
  int64_t written = 0;
  for_each_run(src, [&](int64_t off, int64_t run) {
    const void* from = base + off * static_cast<int64_t>(in_size);
    void* to_ptr = dst + written * static_cast<int64_t>(out_size);
    if (src.dtype() == dtype_) {
      std::memcpy(to_ptr, from, static_cast<size_t>(run) * in_size);
    } else {
      convert(from, src.dtype(), to_ptr, dtype_, static_cast<size_t>(run));
    }
    written += run;
  });
}

std::string Tensor::describe() const { return cat(dtype_name(dtype_), shape_.str()); }

}  // namespace otter

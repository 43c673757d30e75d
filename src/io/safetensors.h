#pragma once
// Reading and writing .safetensors files: an 8-byte little-endian header length N, N bytes of
// JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then
// the raw little-endian tensor data (offsets relative to the end of the header).
//
// The reader memory-maps the file and validates the whole header before any tensor is touched,
// so a malformed or hostile file fails at open() with a message naming the file, the tensor and
// what is wrong. Tensors come back as zero-copy views that keep the mapping alive on their own.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "core/tensor.h"

namespace otter {

// Largest JSON header accepted, in bytes. Real checkpoints have headers of a few hundred KB;
// the cap (the same as the reference Rust implementation's) stops a corrupt length field from
// making us read or allocate gigabytes before noticing the file is bad.
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct SafetensorsEntry {
  DType dtype = DType::F32;
  Shape shape;
  uint64_t offset = 0;  // from the start of the data area (just past the header)
  uint64_t nbytes = 0;
};

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates its header; throws otter::Error on any problem.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  // Tensor names in alphabetical order (the JSON header is an unordered object; sorting makes
  // listings and error messages reproducible). `__metadata__` is not a tensor and not listed.
  std::vector<std::string> names() const;
  size_t size() const { return entries_.size(); }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  // dtype, shape and byte size of one tensor; throws naming the file and tensor if absent.
  const SafetensorsEntry& info(const std::string& name) const;
  // A view of the tensor's bytes in the mapping (no copy). The view keeps the mapping alive,
  // so it may outlive this object. A tensor whose offset is not aligned to its element size
  // (legal in the format, never produced by common writers) is copied instead, since reading
  // a misaligned float through a float* is undefined behaviour.
  Tensor tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t header_bytes() const { return header_bytes_; }
  uint64_t file_bytes() const { return file_bytes_; }

 private:
  struct Mapping;
  SafetensorsFile() = default;

  std::filesystem::path path_;
  std::shared_ptr<const Mapping> mapping_;
  const unsigned char* data_ = nullptr;  // start of the data area inside the mapping
  uint64_t header_bytes_ = 0;
  uint64_t file_bytes_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (in the given order, packed back to back, each converted to contiguous
// row-major) and `metadata` to `path`. The header is padded with spaces to a multiple of 8 so
// the data area is 8-byte aligned. The file is written to a temporary file in the same folder
// and renamed into place, so `path` either keeps its old content or gets the complete new one.
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace otter

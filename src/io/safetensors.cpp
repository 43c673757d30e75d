#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace otter {

// The format stores little-endian data and otter hands the bytes out as-is.
static_assert(std::endian::native == std::endian::little, "otter's safetensors I/O assumes a little-endian host");

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t bytes = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr != nullptr) munmap(addr, bytes);
  }
};

namespace {

using nlohmann::json;

std::string supported_dtypes() { return "F32, F16, BF16, F64, I32, I64, U8"; }

// Every message starts with the file and, where there is one, the tensor it is about.
[[noreturn]] void fail(const std::filesystem::path& path, const std::string& message) {
  throw Error(cat("safetensors file '", path.string(), "': ", message));
}
[[noreturn]] void fail(const std::filesystem::path& path, const std::string& tensor, const std::string& message) {
  throw Error(cat("safetensors file '", path.string(), "': tensor '", tensor, "': ", message));
}

// Closes a file descriptor on every path out of a scope.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A JSON number that is a non-negative integer (nlohmann stores those as number_unsigned;
// negative integers are number_integer and fractional ones number_float).
bool is_non_negative_integer(const json& v) { return v.is_number_unsigned(); }

SafetensorsEntry parse_entry(const std::filesystem::path& path, const std::string& name, const json& e,
                             uint64_t data_bytes) {
  if (!e.is_object()) fail(path, name, cat("entry must be a JSON object, got ", e.type_name()));

  const auto dtype_it = e.find("dtype");
  if (dtype_it == e.end() || !dtype_it->is_string()) fail(path, name, "missing or non-string \"dtype\"");
  const std::string dtype_str = dtype_it->get<std::string>();
  const std::optional<DType> dtype = dtype_from_name(dtype_str);
  if (!dtype)
    fail(path, name, cat("unsupported dtype \"", dtype_str, "\" (otter reads ", supported_dtypes(), ")"));

  const auto shape_it = e.find("shape");
  if (shape_it == e.end() || !shape_it->is_array()) fail(path, name, "missing \"shape\" or it is not an array");
  std::vector<int64_t> dims;
  for (const json& d : *shape_it) {
    if (!is_non_negative_integer(d))
      fail(path, name, cat("shape ", shape_it->dump(), " must hold non-negative integers, found ", d.dump()));
    const uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) fail(path, name, cat("dimension ", v, " in shape is too large"));
    dims.push_back(static_cast<int64_t>(v));
  }
  if (dims.size() > static_cast<size_t>(kMaxDims))
    fail(path, name, cat("shape ", shape_it->dump(), " has ", dims.size(), " dimensions; otter tensors have at most ",
                         kMaxDims));

  const auto off_it = e.find("data_offsets");
  if (off_it == e.end() || !off_it->is_array() || off_it->size() != 2 || !is_non_negative_integer((*off_it)[0]) ||
      !is_non_negative_integer((*off_it)[1]))
    fail(path, name, "\"data_offsets\" must be [begin, end] with non-negative integers");
  const uint64_t begin = (*off_it)[0].get<uint64_t>();
  const uint64_t end = (*off_it)[1].get<uint64_t>();
  if (begin > end) fail(path, name, cat("data_offsets [", begin, ", ", end, "] have begin after end"));

  // numel * element size, refusing products that overflow (a hostile shape must not wrap
  // around to a small size that happens to match the offsets).
  uint64_t expected = dtype_size(*dtype);
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(expected, static_cast<uint64_t>(d), &expected))
      fail(path, name, cat("shape ", shape_it->dump(), " is too large (byte size overflows 64 bits)"));
  }
  if (end - begin != expected)
    fail(path, name, cat("wrong size for shape: ", dtype_str, shape_it->dump(), " needs ", expected,
                         " bytes but data_offsets [", begin, ", ", end, "] span ", end - begin));
  if (end > data_bytes)
    fail(path, name, cat("data_offsets [", begin, ", ", end, "] out of range: the data area holds only ", data_bytes,
                         " bytes (file truncated?)"));

  SafetensorsEntry entry;
  entry.dtype = *dtype;
  entry.shape = Shape(dims);
  entry.offset = begin;
  entry.nbytes = expected;
  return entry;
}

std::map<std::string, std::string> parse_metadata(const std::filesystem::path& path, const json& m) {
  if (!m.is_object()) fail(path, cat("\"__metadata__\" must be a JSON object of strings, got ", m.type_name()));
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : m.items()) {
    if (!value.is_string())
      fail(path, cat("\"__metadata__\" value for key '", key, "' must be a string, got ", value.type_name(), " ",
                     value.dump()));
    out[key] = value.get<std::string>();
  }
  return out;
}

// Two tensors whose byte ranges share at least one byte would alias each other's data.
void check_no_overlap(const std::filesystem::path& path, const std::map<std::string, SafetensorsEntry>& entries) {
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> sorted;
  for (const auto& [name, e] : entries)
    if (e.nbytes > 0) sorted.emplace_back(&name, &e);
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second->offset < b.second->offset; });
  // Sorted by begin, a range overlaps an earlier one iff it starts before the furthest end so far.
  const std::pair<const std::string*, const SafetensorsEntry*>* furthest = nullptr;
  for (const auto& cur : sorted) {
    if (furthest != nullptr) {
      const uint64_t prev_end = furthest->second->offset + furthest->second->nbytes;
      if (cur.second->offset < prev_end)
        fail(path, *cur.first,
             cat("data_offsets [", cur.second->offset, ", ", cur.second->offset + cur.second->nbytes,
                 "] overlap tensor '", *furthest->first, "' at [", furthest->second->offset, ", ", prev_end, "]"));
    }
    if (furthest == nullptr || cur.second->offset + cur.second->nbytes > furthest->second->offset + furthest->second->nbytes)
      furthest = &cur;
  }
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile f;
  f.path_ = path;

  FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) fail(path, cat("cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail(path, cat("cannot stat: ", std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  f.file_bytes_ = size;
  if (size < 8)
    fail(path, cat("file is ", size, " bytes, shorter than the 8-byte header length (truncated or not safetensors)"));

  auto mapping = std::make_shared<Mapping>();
  void* addr = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (addr == MAP_FAILED) fail(path, cat("cannot memory-map ", size, " bytes: ", std::strerror(errno)));
  mapping->addr = addr;
  mapping->bytes = static_cast<size_t>(size);
  const auto* bytes = static_cast<const unsigned char*>(addr);

  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > kSafetensorsMaxHeaderBytes)
    fail(path, cat("header length ", header_len, " bytes exceeds the limit of ", kSafetensorsMaxHeaderBytes,
                   " bytes (corrupt length field or not a safetensors file)"));
  if (header_len > size - 8)
    fail(path, cat("header length ", header_len, " bytes reaches past the end of the file (", size,
                   " bytes): the file is truncated"));
  f.header_bytes_ = header_len;

  // Checked before parsing: a NUL would end nlohmann's parse early and silently drop the rest.
  const char* text = reinterpret_cast<const char*>(bytes + 8);
  if (const void* nul = std::memchr(text, 0, static_cast<size_t>(header_len)))
    fail(path, cat("header is not valid JSON: NUL byte at header offset ", static_cast<const char*>(nul) - text,
                   " (the header must be UTF-8 JSON padded with spaces)"));
  json header;
  try {
    header = json::parse(text, text + header_len);
  } catch (const json::exception& e) {
    fail(path, cat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) fail(path, cat("header must be a JSON object, got ", header.type_name()));

  const uint64_t data_bytes = size - 8 - header_len;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      f.metadata_ = parse_metadata(path, value);
    } else {
      f.entries_.emplace(name, parse_entry(path, name, value, data_bytes));
    }
  }
  check_no_overlap(path, f.entries_);

  f.data_ = bytes + 8 + header_len;
  f.mapping_ = std::move(mapping);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

const SafetensorsEntry& SafetensorsFile::info(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) fail(path_, name, cat("no such tensor in the file (it holds ", entries_.size(), " tensors)"));
  return it->second;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = info(name);
  const unsigned char* p = data_ + e.offset;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) == 0)
    return Tensor::wrap(p, e.shape, e.dtype, std::shared_ptr<const void>(mapping_), /*file_backed=*/true);
  Tensor copy = Tensor::empty(e.shape, e.dtype);
  std::memcpy(copy.raw(), p, static_cast<size_t>(e.nbytes));
  return copy;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

void write_all(int fd, const void* data, size_t n, const std::filesystem::path& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(cat("cannot write safetensors file '", path.string(), "': ", std::strerror(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

std::string build_header(const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata, const std::filesystem::path& path) {
  // ordered_json keeps the entries in the caller's order, which is also their order on disk.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    OTTER_CHECK(!name.empty(), "cannot write safetensors file '", path.string(), "': empty tensor name");
    OTTER_CHECK(name != "__metadata__", "cannot write safetensors file '", path.string(),
                "': '__metadata__' is reserved and cannot name a tensor");
    OTTER_CHECK(!header.contains(name), "cannot write safetensors file '", path.string(), "': tensor '", name,
                "' appears twice");
    OTTER_CHECK(t.defined(), "cannot write safetensors file '", path.string(), "': tensor '", name,
                "' is undefined");
    const uint64_t n = t.nbytes();
    header[name] = {{"dtype", std::string(dtype_name(t.dtype()))},
                    {"shape", t.shape().to_vector()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  // Pad so the data area (at 8 + header length) starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace

void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = build_header(tensors, metadata, path);

  // A unique name in the same folder so the final rename is atomic (same file system).
  static std::atomic<uint64_t> counter{0};
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const std::filesystem::path tmp =
      dir / cat(".", path.filename().string(), ".tmp-", ::getpid(), "-", counter.fetch_add(1));

  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0)
    throw Error(cat("cannot write safetensors file '", path.string(), "': cannot create '", tmp.string(),
                    "': ", std::strerror(errno)));
  try {
    unsigned char len[8];
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    write_all(fd, len, 8, path);
    write_all(fd, header.data(), header.size(), path);
    for (const auto& [name, t] : tensors) {
      if (t.numel() == 0) continue;
      const Tensor c = t.contiguous();
      write_all(fd, c.raw(), c.nbytes(), path);
    }
    if (::fsync(fd) != 0)
      throw Error(cat("cannot write safetensors file '", path.string(), "': fsync failed: ", std::strerror(errno)));
    // Closed exactly once: after a failed close the descriptor number may already belong to
    // another thread's file.
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0)
      throw Error(cat("cannot write safetensors file '", path.string(), "': close failed: ", std::strerror(errno)));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw Error(cat("cannot write safetensors file '", path.string(), "': rename from '", tmp.string(),
                    "' failed: ", ec.message()));
  }
}

}  // namespace otter

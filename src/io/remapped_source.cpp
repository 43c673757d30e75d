#include "io/remapped_source.h"

#include <algorithm>

#include "core/error.h"

namespace otter {

namespace {

// The stored shape after taking the row slice, if any.
Shape sliced_shape(const SafetensorsEntry& info, const LdmTensorRef& ref) {
  Shape s = info.shape;
  if (ref.row_begin >= 0 && s.rank() > 0) s[0] = ref.row_end - ref.row_begin;
  return s;
}

// The shape without trailing 1-sized dimensions: [C, C, 1, 1] -> [C, C].
std::vector<int64_t> without_trailing_ones(const Shape& s) {
  std::vector<int64_t> d = s.to_vector();
  while (d.size() > 1 && d.back() == 1) d.pop_back();
  return d;
}

}  // namespace

RemappedSource::RemappedSource(std::shared_ptr<const SafetensorsFile> file, std::map<std::string, Entry> entries,
                               std::vector<std::string> passthrough, std::string origin)
    : file_(std::move(file)), entries_(std::move(entries)), passthrough_(std::move(passthrough)),
      origin_(std::move(origin)) {
  std::sort(passthrough_.begin(), passthrough_.end());
}

bool RemappedSource::has(const std::string& name) const {
  auto it = entries_.find(name);
  if (it != entries_.end()) return file_->has(it->second.ref.key);
  return std::binary_search(passthrough_.begin(), passthrough_.end(), name);
}

Tensor RemappedSource::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    OTTER_CHECK(std::binary_search(passthrough_.begin(), passthrough_.end(), name), "no tensor '", name, "' in ",
                origin_);
    return file_->tensor(name);
  }
  const Entry& e = it->second;
  OTTER_CHECK(file_->has(e.ref.key), "missing tensor '", e.ref.key, "' (read as '", name, "') in ", origin_);
  Tensor t = file_->tensor(e.ref.key);
  if (e.ref.row_begin >= 0) {
    OTTER_CHECK(t.rank() >= 1 && e.ref.row_end <= t.dim(0), "tensor '", e.ref.key, "' in ", origin_, " has shape ",
                t.shape().str(), ": too few rows for '", name, "' (rows ", e.ref.row_begin, "..", e.ref.row_end,
                " of the fused q/k/v projection)");
    t = t.slice(0, e.ref.row_begin, e.ref.row_end);
  }
  if (e.view_shape) t = t.reshape(*e.view_shape);
  return t;
}

std::vector<std::string> RemappedSource::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size() + passthrough_.size());
  for (const auto& [name, e] : entries_)
    if (file_->has(e.ref.key)) out.push_back(name);
  out.insert(out.end(), passthrough_.begin(), passthrough_.end());
  return out;
}

std::optional<std::string> RemappedSource::source_key(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return std::nullopt;
  return it->second.ref.key;
}

std::map<std::string, RemappedSource::Entry> make_remap_entries(const SafetensorsFile& file, const LdmKeyMap& map,
                                                                const std::map<std::string, Shape>& expected) {
  std::map<std::string, RemappedSource::Entry> entries;
  for (const auto& [name, ref] : map) {
    RemappedSource::Entry e{ref, std::nullopt};
    auto want = expected.find(name);
    if (file.has(ref.key) && want != expected.end()) {
      const Shape stored = sliced_shape(file.info(ref.key), ref);
      if (stored != want->second && stored.numel() == want->second.numel() &&
          without_trailing_ones(stored) == without_trailing_ones(want->second))
        e.view_shape = want->second;
    }
    entries.emplace(name, std::move(e));
  }
  return entries;
}

}  // namespace otter

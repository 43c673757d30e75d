#pragma once
// Writing a file so that readers (and a crash) only ever see the old content or the complete new
// content: the bytes go to a temporary file in the same folder (`<name>.tmp-<pid>-<n>`, so the
// final rename stays on one file system), which is flushed to disk and renamed over the target.
// If anything fails, or the writer is destroyed without commit(), the temporary file is removed
// and the target is left untouched.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

namespace otter {

class AtomicFileWriter {
 public:
  // Creates the temporary file next to `target`. Throws otter::Error naming `target` and the
  // OS error when that is impossible (missing or read-only folder, path is not in a folder…).
  explicit AtomicFileWriter(std::filesystem::path target);
  ~AtomicFileWriter();  // removes the temporary file unless commit() succeeded
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends bytes; throws otter::Error (e.g. disk full) after removing the temporary file.
  void write(const void* data, size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }

  // fsync, close and rename over the target; throws otter::Error (temporary file removed) if
  // any step fails, e.g. when the target is an existing folder.
  void commit();

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  [[noreturn]] void fail(std::string_view what, int os_error);
  void discard() noexcept;

  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  bool done_ = false;  // committed or discarded
};

// One-shot helpers for content already in memory.
void write_file_atomically(const std::filesystem::path& path, std::span<const uint8_t> bytes);
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace otter

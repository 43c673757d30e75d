#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <system_error>

#include "core/error.h"

namespace otter {
namespace {

std::string os_message(int os_error) { return std::system_category().message(os_error); }

// The folder the temporary file goes into: the target's own, so rename() cannot cross file
// systems. A bare file name means the current folder.
std::filesystem::path folder_of(const std::filesystem::path& target) {
  const std::filesystem::path parent = target.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::filesystem::path target) : target_(std::move(target)) {
  if (target_.filename().empty()) {
    throw Error(cat("cannot write '", target_.string(), "': the path names a folder, not a file"));
  }
  static std::atomic<uint64_t> counter{0};
  // O_EXCL with a name unique to this process and call; retried in the unlikely case that a
  // stale file of a crashed process with the same pid is in the way. Mode 0666 lets the umask
  // decide the final permissions, as for any newly created file.
  for (int attempt = 0; attempt < 100; ++attempt) {
    temp_ = folder_of(target_) /
            cat(target_.filename().string(), ".tmp-", ::getpid(), "-", counter.fetch_add(1));
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) return;
    if (errno != EEXIST) break;
  }
  const int err = errno;
  done_ = true;  // nothing to clean up
  throw Error(cat("cannot write '", target_.string(), "': cannot create a temporary file in '",
                  folder_of(target_).string(), "': ", os_message(err)));
}

AtomicFileWriter::~AtomicFileWriter() { discard(); }

void AtomicFileWriter::discard() noexcept {
  if (done_) return;
  done_ = true;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  std::error_code ignored;  // best effort: we are already reporting (or unwinding from) an error
  std::filesystem::remove(temp_, ignored);
}

void AtomicFileWriter::fail(std::string_view what, int os_error) {
  discard();
  throw Error(cat("cannot write '", target_.string(), "': ", what, ": ", os_message(os_error)));
}

void AtomicFileWriter::write(const void* data, size_t size) {
  OTTER_CHECK(!done_, "cannot write '", target_.string(), "': the file was already committed or discarded");
  const auto* bytes = static_cast<const unsigned char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, bytes, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed", errno);
    }
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  OTTER_CHECK(!done_, "cannot write '", target_.string(), "': the file was already committed or discarded");
  // fsync before rename: otherwise a crash can leave the new name pointing at empty data.
  if (::fsync(fd_) != 0) fail("fsync failed", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close failed", errno);
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    fail(cat("cannot rename '", temp_.string(), "' to it"), errno);
  }
  done_ = true;
  // Make the rename itself durable. Some file systems refuse fsync on a folder; the data is
  // already safe then, so this is best effort.
  const int dir = ::open(folder_of(target_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

void write_file_atomically(const std::filesystem::path& path, std::span<const uint8_t> bytes) {
  AtomicFileWriter file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFileWriter file(path);
  file.write(bytes);
  file.commit();
}

}  // namespace otter

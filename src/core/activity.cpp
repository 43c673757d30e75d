#include "core/activity.h"

#include <filesystem>
#include <new>
#include <vector>

#include "core/error.h"

namespace otter {
namespace {
thread_local std::vector<std::string> failed;
}  // namespace

Activity::Activity(std::string what) : what_(std::move(what)), exceptions_at_start_(std::uncaught_exceptions()) {}

Activity::Activity(Describe describe, const void* context)
    : describe_(describe), context_(context), exceptions_at_start_(std::uncaught_exceptions()) {}

Activity::~Activity() {
  if (std::uncaught_exceptions() > exceptions_at_start_) failed.push_back(describe_ ? describe_(context_) : std::move(what_));
}

std::string failed_activities() {
  std::string out;
  for (size_t i = 0; i < failed.size(); ++i) out += (i ? ", in " : "") + failed[i];
  return out;
}

void clear_failed_activities() { failed.clear(); }

std::string describe_failure(const std::exception& e) {
  const std::string where = failed_activities();
  const std::string during = where.empty() ? std::string() : " while " + where;
  if (dynamic_cast<const Error*>(&e)) return e.what();
  if (dynamic_cast<const std::bad_alloc*>(&e))
    return cat("out of memory", during,
               ". Ask for less at once (a smaller -W/-H, fewer --images or --max-batch, --vae-tile, --cfg-batch "
               "split) or free memory; otter's memory plan (see `--memory-limit`) estimates what fits");
  if (const auto* fs = dynamic_cast<const std::filesystem::filesystem_error*>(&e))
    return cat("file system error", during, ": ", fs->code().message(), " (", fs->path1().string(), ")");
  return cat("unexpected error", during, ": ", e.what());
}

}  // namespace otter

#pragma once
// What otter is doing, so that an exception which does not say it itself (std::bad_alloc, a
// filesystem or library error) still reaches the user as a sentence: "out of memory while
// denoising step 3 of 20 (UNet on 4 rows of 64x64 latents)", never a bare C++ type name.
//
//   Activity a(cat("decoding ", n, " images with the VAE"));   // scoped to the work
//
// When an exception leaves an Activity's scope, the activity is recorded (innermost first), and
// the top-level handler reads the record with failed_activities() after the unwinding is done.
#include <exception>
#include <string>

namespace otter {

class Activity {
 public:
  explicit Activity(std::string what);
  // The description is made only if an exception leaves the scope: for a loop that must not
  // allocate (the denoising loop), `describe(context)` formats it from the loop's state.
  using Describe = std::string (*)(const void* context);
  Activity(Describe describe, const void* context);
  ~Activity();
  Activity(const Activity&) = delete;
  Activity& operator=(const Activity&) = delete;

 private:
  std::string what_;
  Describe describe_ = nullptr;
  const void* context_ = nullptr;
  int exceptions_at_start_;
};

// "denoising step 3 of 20 (…), generating 4 images" — the activities an exception left, innermost
// first, on this thread; empty when none. clear_failed_activities() forgets them.
std::string failed_activities();
void clear_failed_activities();

// The sentence the top-level handler prints for `e`: otter::Error's own message (it already names
// the problem), otherwise what the exception was and what was being done.
std::string describe_failure(const std::exception& e);

}  // namespace otter

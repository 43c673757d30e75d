// Exceptions that do not say what was being done (std::bad_alloc above all) reach the user as a
// sentence naming the work, from the Activity scopes they left.
#include <gtest/gtest.h>

#include <new>
#include <string>

#include "core/activity.h"
#include "core/error.h"
#include "core/system_memory.h"

namespace otter {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Activity, BadAllocNamesWhatWasBeingDone) {
  clear_failed_activities();
  try {
    Activity outer("generating 4 images");
    {
      Activity finished("encoding 1 prompt with the text encoder");  // left normally: not recorded
    }
    Activity inner("denoising step 3 of 20: the UNet on 8 images of 64x64 latents");
    throw std::bad_alloc();
  } catch (const std::exception& e) {
    const std::string message = describe_failure(e);
    EXPECT_EQ(message.rfind("out of memory while denoising step 3 of 20: the UNet on 8 images of 64x64 latents, in "
                            "generating 4 images. ",
                            0),
              0u)
        << message;
    EXPECT_FALSE(contains(message, "std::bad_alloc")) << message;
    EXPECT_FALSE(contains(message, "encoding")) << message;
    EXPECT_TRUE(contains(message, "--max-batch")) << message;
  }
  clear_failed_activities();
  EXPECT_EQ(failed_activities(), "");
}

TEST(Activity, OtterErrorsKeepTheirOwnMessage) {
  clear_failed_activities();
  try {
    Activity a("loading the model x");
    throw Error("tensor 'a' has shape [2] but the config gives [3]");
  } catch (const std::exception& e) {
    EXPECT_EQ(describe_failure(e), "tensor 'a' has shape [2] but the config gives [3]");
  }
  clear_failed_activities();
  try {
    Activity a("writing out.png");
    throw std::runtime_error("basic_ios::clear");
  } catch (const std::exception& e) {
    EXPECT_EQ(describe_failure(e), "unexpected error while writing out.png: basic_ios::clear");
  }
  clear_failed_activities();
}

TEST(SystemMemory, ReadsThisProcessAndTheSystem) {
  const ProcessMemory p = process_memory();
  EXPECT_GT(p.resident_bytes, 1e6);
  EXPECT_GE(p.peak_resident_bytes, p.resident_bytes);
  const SystemMemory s = system_memory();
  ASSERT_TRUE(s.mem_available.has_value());  // Linux has had MemAvailable since 3.14
  ASSERT_TRUE(s.available_to_process.has_value());
  EXPECT_GT(*s.available_to_process, p.resident_bytes);
  EXPECT_TRUE(contains(s.describe(), "MemAvailable ")) << s.describe();
}

}  // namespace
}  // namespace otter

#pragma once
// Where the reference data in ../shared lives. Tests that need it call OTTER_REQUIRE_SHARED(),
// which skips the test with a message saying why when the data is absent (a user's clone).
#include <filesystem>
#include <optional>

#include <gtest/gtest.h>

namespace otter::testing {

// $OTTER_SHARED_DIR if set, else the source tree's ../shared; nullopt if neither exists.
std::optional<std::filesystem::path> shared_dir();

}  // namespace otter::testing

#define OTTER_REQUIRE_SHARED(var)                                                                   \
  const auto var##_opt = ::otter::testing::shared_dir();                                              \
  if (!var##_opt) GTEST_SKIP() << "reference data ../shared not found (set OTTER_SHARED_DIR to the "   \
                                  "folder holding golden/, models/ and tokenizer/)";                  \
  const std::filesystem::path var = *var##_opt

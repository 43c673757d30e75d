#pragma once
// Runs the built `otter` binary (OTTER_CLI_BINARY, set by tests/CMakeLists.txt) as a user would,
// capturing stdout, stderr and the exit status. Shared by the CLI test files.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "support/shared_data.h"

namespace otter::testing {

struct OtterRun {
  int status = -1;  // exit status; -1 if the process did not exit normally
  std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// `arguments` are appended to the command line as they are (quote paths for the shell).
inline OtterRun run_otter(const std::string& arguments) {
  static std::atomic<int> counter{0};
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / cat("otter_run_", ::getpid(), "_", counter++);
  fs::create_directories(dir);
  const std::string cmd = cat("'", OTTER_CLI_BINARY, "' ", arguments, " >'", (dir / "out").string(), "' 2>'",
                              (dir / "err").string(), "'");
  const int raw = std::system(cmd.c_str());
  OtterRun r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = slurp(dir / "out");
  r.err = slurp(dir / "err");
  fs::remove_all(dir);
  return r;
}

// A CLI test: the shared reference data (the test is skipped, saying why, without it) and an empty
// work folder of its own, removed afterwards.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto shared = shared_dir();
    if (!shared) GTEST_SKIP() << "reference data ../shared not found (set OTTER_SHARED_DIR)";
    shared_ = *shared;
    dir_ = std::filesystem::temp_directory_path() /
           cat("otter_cli_", ::getpid(), "_", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::filesystem::path shared_, dir_;
};

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace otter::testing

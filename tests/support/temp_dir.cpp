#include "support/temp_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace otter::testing {

namespace fs = std::filesystem;

TempDir::TempDir(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string test = info ? std::string(info->test_suite_name()) + "." + info->name() : "no_test";
  std::string name = "otter_" + tag + "_" + std::to_string(::getpid()) + "_" + test;
  for (char& c : name)
    if (c == '/') c = '_';  // parameterised tests' names hold '/'
  path_ = fs::temp_directory_path() / name;
  fs::remove_all(path_);
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(path_, ec);
}

std::vector<std::string> TempDir::entries() const {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename().string());
  return names;
}

}  // namespace otter::testing

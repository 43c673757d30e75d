#pragma once
// A fresh folder for one test, removed (with whatever the test put in it) when it goes out of scope.
#include <filesystem>
#include <string>
#include <vector>

namespace otter::testing {

class TempDir {
 public:
  // Named after the tag, the running test and this process, so tests in parallel never share one.
  explicit TempDir(const std::string& tag = "test");
  // Gives write permission back first: some tests make the folder read-only to check refusals.
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::vector<std::string> entries() const;  // the names directly inside, in directory order

 private:
  std::filesystem::path path_;
};

}  // namespace otter::testing

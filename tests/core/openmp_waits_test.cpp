// The OpenMP wait policy otter and otter-bench restart themselves with (core/openmp_waits.h).
#include "core/openmp_waits.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace otter {
namespace {

// Run only as the restarted child of RestartsWithTheShortSpinCount: what libgomp will read.
TEST(OpenMpWaits, ChildSeesTheShortSpinCount) {
  if (!std::getenv("OTTER_OPENMP_WAITS_CHILD")) GTEST_SKIP() << "runs as RestartsWithTheShortSpinCount's child";
  ASSERT_NE(std::getenv("GOMP_SPINCOUNT"), nullptr);
  EXPECT_STREQ(std::getenv("GOMP_SPINCOUNT"), kOpenMpSpinCount);
  EXPECT_EQ(std::getenv("OMP_WAIT_POLICY"), nullptr);
}

TEST(OpenMpWaits, RestartsWithTheShortSpinCount) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    unsetenv("OMP_WAIT_POLICY");
    unsetenv("GOMP_SPINCOUNT");
    setenv("OTTER_OPENMP_WAITS_CHILD", "1", 1);
    std::string name = "otter_core_tests", filter = "--gtest_filter=OpenMpWaits.ChildSeesTheShortSpinCount";
    char* argv[] = {name.data(), filter.data(), nullptr};
    restart_with_short_openmp_spins(argv);
    _exit(3);  // not restarted
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: no restart; 1: the child saw another GOMP_SPINCOUNT";
}

TEST(OpenMpWaits, KeepsTheUsersChoice) {
  for (const char* variable : {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      unsetenv("OMP_WAIT_POLICY");
      unsetenv("GOMP_SPINCOUNT");
      setenv(variable, "passive", 1);
      std::string name = "otter_core_tests", filter = "--gtest_filter=NoSuchTest";
      char* argv[] = {name.data(), filter.data(), nullptr};
      restart_with_short_openmp_spins(argv);  // returns: the user's setting stands
      const char* spin = std::getenv("GOMP_SPINCOUNT");
      _exit(std::string(variable) == "GOMP_SPINCOUNT" ? (spin && std::string(spin) == "passive" ? 0 : 1)
                                                      : (spin ? 1 : 0));
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << variable << " set: the restart should leave the policy alone";
  }
}

}  // namespace
}  // namespace otter

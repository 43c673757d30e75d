#include "core/openmp_waits.h"

#include <unistd.h>

#include <cstdlib>

namespace otter {

void restart_with_short_openmp_spins(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  setenv("GOMP_SPINCOUNT", kOpenMpSpinCount, 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then carry on with the defaults
}

}  // namespace otter

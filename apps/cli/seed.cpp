// --seed -1: a random seed, as the webui draws one (0 … 2^32 − 1), said in the log so the run can
// be repeated (the PNG records it too).
#include <random>

#include "commands.h"
#include "core/error.h"

namespace otter::cli {

uint64_t resolve_seed(int64_t seed, bool quiet) {
  OTTER_CHECK(seed >= -1, "--seed ", seed, " is not a seed: give 0 or more, or -1 for a random one");
  if (seed >= 0) return static_cast<uint64_t>(seed);
  std::random_device device;
  const uint64_t drawn = device();
  log(quiet, cat("otter: --seed -1: drew seed ", drawn));
  return drawn;
}

}  // namespace otter::cli

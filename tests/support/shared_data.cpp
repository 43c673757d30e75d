#include "support/shared_data.h"

#include <cstdlib>

namespace otter::testing {

std::optional<std::filesystem::path> shared_dir() {
  std::filesystem::path dir = OTTER_SHARED_DIR_DEFAULT;
  if (const char* env = std::getenv("OTTER_SHARED_DIR"); env && *env) dir = env;
  if (std::filesystem::is_directory(dir / "golden")) return std::filesystem::weakly_canonical(dir);
  return std::nullopt;
}

}  // namespace otter::testing

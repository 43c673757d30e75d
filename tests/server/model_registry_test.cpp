// The models a server offers: the default one and every model in --models DIR, each loaded on
// first use; at most --max-loaded stay loaded (the least recently used one no request holds is
// dropped first); an unknown name is an error listing the known ones.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "backend/backend.h"
#include "core/error.h"
#include "model_registry.h"
#include "pipeline/default_model.h"

namespace otter::serve {
namespace {

namespace fs = std::filesystem;

TEST(ModelRegistry, LoadsOnFirstUseAndKeepsAtMostMaxLoaded) {
  const fs::path dir = fs::temp_directory_path() / cat("otter_models_", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* name : {"alpha", "beta"}) fs::create_directory_symlink(fs::absolute(find_default_model()), dir / name);
  std::ofstream(dir / "notes.txt") << "not a model";
  auto backend = make_cpu_backend(Precision::F32);
  std::mutex device;
  ModelRegistry models(find_default_model(), dir, 1, *backend, device);
  EXPECT_EQ(models.names(), (std::vector<std::string>{"alpha", "beta", "otter-shapes"}));
  for (const ModelEntry& m : models.list()) EXPECT_FALSE(m.loaded) << m.name;

  auto alpha = models.acquire("alpha");
  EXPECT_EQ(alpha->name, "alpha");
  EXPECT_TRUE(alpha->preview.has_value());
  {
    // alpha is held: loading beta cannot drop it, so both are loaded for now.
    auto beta = models.acquire("beta");
    int loaded = 0;
    for (const ModelEntry& m : models.list()) loaded += m.loaded;
    EXPECT_EQ(loaded, 2);
  }
  alpha.reset();
  (void)models.acquire("otter-shapes");  // over the limit: the least recently used unheld ones go
  int loaded = 0;
  for (const ModelEntry& m : models.list()) loaded += m.loaded;
  EXPECT_EQ(loaded, 1);
  try {
    (void)models.acquire("gamma");
    FAIL() << "an unknown model was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("this server has: alpha, beta, otter-shapes"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace otter::serve

// `otter info MODEL`, run as a user would, on the tiny models in both layouts: the same
// family, prediction type and per-component parameter counts whichever layout is given.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;

struct InfoRun {
  int status = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `otter info <args>` (arguments already quoted for the shell).
InfoRun otter_info(const std::string& args) {
  const fs::path dir = fs::temp_directory_path() / cat("otter_info_model_", ::getpid());
  fs::create_directories(dir);
  const std::string cmd = cat("'", OTTER_CLI_BINARY, "' info ", args, " >'", (dir / "out").string(), "' 2>'",
                              (dir / "err").string(), "'");
  const int raw = std::system(cmd.c_str());
  InfoRun r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = slurp(dir / "out");
  r.err = slurp(dir / "err");
  fs::remove_all(dir);
  return r;
}

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

TEST(OtterInfoModel, SameDescriptionInBothLayouts) {
  OTTER_REQUIRE_SHARED(shared);
  const fs::path models = shared / "models";
  const InfoRun folder = otter_info(cat("'", (models / "tiny-sd2").string(), "'"));
  const InfoRun single = otter_info(cat("'", (models / "tiny-sd2.safetensors").string(), "' --config '",
                                    (models / "tiny-sd2").string(), "'"));
  for (const InfoRun* r : {&folder, &single}) {
    ASSERT_EQ(r->status, 0) << r->err;
    EXPECT_TRUE(contains(r->out, "family:       SD 2.x\n")) << r->out;
    EXPECT_TRUE(contains(r->out, "prediction:   v_prediction\n")) << r->out;
    EXPECT_TRUE(contains(r->out, "scheduler:    DDIMScheduler\n")) << r->out;
    // Text encoder: 3 layers of the 4 the single file holds; no position_ids buffer.
    EXPECT_TRUE(contains(r->out, "  tensors:      52, dtypes F32 (52)\n  parameters:   1603951\n")) << r->out;
    EXPECT_TRUE(contains(r->out, "  tensors:      684, dtypes F32 (684)\n  parameters:   827476\n")) << r->out;
    EXPECT_TRUE(contains(r->out, "  tensors:      244, dtypes F32 (244)\n  parameters:   354391\n")) << r->out;
    EXPECT_TRUE(contains(r->out, "total parameters: 2785818\n")) << r->out;
  }
  EXPECT_TRUE(contains(folder.out, "layout:       diffusers folder\n"));
  EXPECT_TRUE(contains(single.out, "layout:       original single file (LDM layout)\n"));
  EXPECT_TRUE(contains(single.out, "3 of the 4 OpenCLIP resblocks are used"));

  const InfoRun eps = otter_info(cat("'", (models / "tiny-sd2").string(), "' --prediction eps"));
  EXPECT_TRUE(contains(eps.out, "prediction:   epsilon\n")) << eps.out << eps.err;
}

TEST(OtterInfoModel, RefusesPickleAndExplainsMismatchedArchitecture) {
  OTTER_REQUIRE_SHARED(shared);
  const fs::path ckpt = fs::temp_directory_path() / cat("otter_info_model_", ::getpid(), ".ckpt");
  std::ofstream(ckpt, std::ios::binary) << "PK\x03\x04";
  const InfoRun pickle = otter_info(cat("'", ckpt.string(), "'"));
  fs::remove(ckpt);
  EXPECT_EQ(pickle.status, 1);
  EXPECT_TRUE(contains(pickle.err, "otter: error: '" + ckpt.string() + "' is a PyTorch pickle checkpoint")) << pickle.err;

  // The tiny single file is not SD 1.5's architecture: without --config that is the error.
  const InfoRun tiny = otter_info(cat("'", (shared / "models" / "tiny-sd1.safetensors").string(), "'"));
  EXPECT_EQ(tiny.status, 1);
  EXPECT_TRUE(contains(tiny.err, "does not match the built-in SD 1.x architecture")) << tiny.err;
}

}  // namespace
}  // namespace otter

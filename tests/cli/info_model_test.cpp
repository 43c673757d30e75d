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
#include "run_otter.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
using InfoRun = testing::OtterRun;
using testing::contains;

// Runs `otter info <args>` (arguments already quoted for the shell).
InfoRun otter_info(const std::string& args) { return testing::run_otter("info " + args); }


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

  // Which tokenizer: the folder's own, or (no folder, configs as files) the vocabulary built into otter.
  EXPECT_TRUE(contains(folder.out, "tokenizer:    " + (models / "tiny-sd2" / "tokenizer").string() + " (the model's own)"))
      << folder.out;
  std::string configs;
  for (const char* c : {"text_encoder/config.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"})
    configs += cat(" --config '", (models / "tiny-sd2" / c).string(), "'");
  const InfoRun bare = otter_info(cat("'", (models / "tiny-sd2.safetensors").string(), "'", configs));
  ASSERT_EQ(bare.status, 0) << bare.err;
  EXPECT_TRUE(contains(bare.out, "tokenizer:    built-in CLIP BPE vocabulary (openai/clip-vit-large-patch14, 49408 tokens), pad token \"!\""))
      << bare.out;

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

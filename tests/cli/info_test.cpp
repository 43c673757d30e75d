// `otter info`, run as a user would: the built binary, its stdout, stderr and exit status.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "run_otter.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;

using RunResult = testing::OtterRun;
using testing::contains;

class OtterInfo : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           cat("otter_cli_", ::getpid(), "_", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `otter info <arg>`; the argument is single-quoted for the shell.
  static RunResult info(const fs::path& arg) { return testing::run_otter("info '" + arg.string() + "'"); }

  fs::path dir_;
};


TEST_F(OtterInfo, DescribesTinySd1Unet) {
  OTTER_REQUIRE_SHARED(shared);
  const RunResult r = info(shared / "models" / "tiny-sd1" / "unet" / "diffusion_pytorch_model.safetensors");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_TRUE(contains(r.out, "tensors:    684\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "parameters: 827,476 ")) << r.out;
  EXPECT_TRUE(contains(r.out, "F32    684 tensors, 827,476 elements")) << r.out;
  EXPECT_TRUE(contains(r.out, "  format = pt\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "F32    [16, 4, 3, 3]\n")) << r.out;  // conv_in.weight's row
}

TEST_F(OtterInfo, CountsOnlyFloatingTensorsAsParameters) {
  const fs::path p = dir_ / "mixed.safetensors";
  write_safetensors(p,
                    {{"w", Tensor::full({2, 3}, 1.f).to(DType::F16)},
                     {"ids", Tensor::zeros({1, 77}, DType::I64)},
                     {"s", Tensor::full({}, 2.f)}},
                    {{"author", "otter test"}});
  const RunResult r = info(p);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "parameters: 7 ")) << r.out;
  EXPECT_TRUE(contains(r.out, "F16    1 tensor, 6 elements, 12 B")) << r.out;
  EXPECT_TRUE(contains(r.out, "I64    1 tensor, 77 elements, 616 B")) << r.out;
  EXPECT_TRUE(contains(r.out, "  author = otter test\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "s     F32    []\n")) << r.out;  // scalar
}

TEST_F(OtterInfo, ErrorsGoToStderrWithExitStatusOne) {
  const RunResult missing = info(dir_ / "absent.safetensors");
  EXPECT_EQ(missing.status, 1);
  EXPECT_TRUE(contains(missing.err, "otter: error: no such file or folder")) << missing.err;

  const fs::path bad = dir_ / "bad.safetensors";
  std::ofstream(bad, std::ios::binary) << "abc";
  const RunResult malformed = info(bad);
  EXPECT_EQ(malformed.status, 1);
  EXPECT_TRUE(contains(malformed.err, "otter: error: safetensors file '")) << malformed.err;
  EXPECT_TRUE(contains(malformed.err, "shorter than the 8-byte header length")) << malformed.err;

  const fs::path txt = dir_ / "notes.txt";
  std::ofstream(txt) << "hello";
  const RunResult unknown = info(txt);
  EXPECT_EQ(unknown.status, 1);
  EXPECT_TRUE(contains(unknown.err, "otter: error: cannot describe")) << unknown.err;
}

}  // namespace
}  // namespace otter

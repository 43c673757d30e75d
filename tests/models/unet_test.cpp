// The UNet against diffusers' outputs for the tiny SD1 (conv projections, 8 heads everywhere) and
// SD2 (linear projections, per-block heads) models: whole forward passes at several timesteps,
// every debug intermediate, batch/timestep broadcasting, bf16 compute and f16-stored weights.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>

#include "core/error.h"
#include "io/safetensors_source.h"
#include "models/unet.h"
#include "support/compare.h"
#include "support/converted_source.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

using testing::Golden;
using testing::max_abs;
using testing::max_abs_diff;

// Bounds for reduced-precision runs, about 3x the largest error measured over all five cases
// of both models (outputs reach |x| ~ 4.3):
//  * bf16 compute: every conv/linear operand rounded to 8 significant bits (relative error up
//    to 2^-9), through ~40 layers; measured max 0.033 (sd1 t_fractional), 0.027 (sd2).
//  * f16-stored weights, f32 compute: each weight rounded once (relative error up to 2^-11);
//    measured max 0.0027 (sd1), 0.0036 (sd2).
constexpr double kBf16Tolerance = 0.1;
constexpr double kF16Tolerance = 0.01;

// Every float tensor of another source rounded to f16, as an f16 checkpoint would hand it out.
class F16Source : public testing::ConvertedSource {
 public:
  explicit F16Source(const TensorSource& inner) : ConvertedSource(inner, DType::F16) {}
};

struct TinyUNet {
  explicit TinyUNet(const std::filesystem::path& model_dir, bool f16_weights = false)
      : file(model_dir / "unet" / "diffusion_pytorch_model.safetensors"), f16(file),
        weights(f16_weights ? static_cast<const TensorSource&>(f16) : file),
        unet(UNetConfig::from_file(model_dir / "unet" / "config.json"), weights) {
    weights.check_all_used();
  }
  SafetensorsSource file;
  F16Source f16;
  Weights weights;
  UNet unet;
};

Tensor timesteps_of(const nlohmann::json& c) {
  const nlohmann::json& t = c.at("timestep");
  if (!t.is_array()) return Tensor::full(Shape{1}, t.get<float>());
  Tensor out = Tensor::empty(Shape{static_cast<int64_t>(t.size())}, DType::F32);
  for (size_t i = 0; i < t.size(); ++i) out.f32()[i] = t[i].get<float>();
  return out;
}

void report(const std::string& what, double err, double tol, double scale) {
  std::printf("[ metric   ] %-45s max|d| = %.3g (tolerance %.3g, max|ref| = %.3g)\n", what.c_str(), err, tol, scale);
}

class UNetGolden : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const auto shared = testing::shared_dir();
    if (!shared) GTEST_SKIP() << "reference data ../shared not found (set OTTER_SHARED_DIR)";
    model_dir_ = *shared / "models" / GetParam();
    golden_.emplace(*shared / "golden" / (std::string(GetParam()) + "_components.json"));
  }
  // Runs a golden UNet case through `unet` on `be`; returns max |out - reference|.
  double run_case(UNet& unet, Backend& be, const std::string& id, double* ref_scale = nullptr) {
    const nlohmann::json& c = golden_->case_by_id(id);
    const Tensor sample = golden_->tensor_ref(c["inputs"]["sample"]);
    const Tensor context = golden_->tensor_ref(c["inputs"]["encoder_hidden_states"]);
    const Tensor expected = golden_->tensor_ref(c["outputs"]["sample"]);
    const Tensor out = unet.forward(be, sample, timesteps_of(c), context);
    EXPECT_EQ(out.shape(), expected.shape());
    if (ref_scale) *ref_scale = max_abs(expected);
    return max_abs_diff(out, expected);
  }
  std::filesystem::path model_dir_;
  std::optional<Golden> golden_;
};

constexpr const char* kCases[] = {"unet/t999", "unet/t500", "unet/t1", "unet/t_per_sample", "unet/t_fractional"};

TEST_P(UNetGolden, LoadsEveryTensorAndCountsParametersExactly) {
  TinyUNet m(model_dir_);
  int64_t total = 0;
  for (const std::string& n : m.file.names()) total += m.file.get(n).numel();
  EXPECT_EQ(m.unet.parameter_count(), total);
  EXPECT_EQ(m.unet.parameter_count(), 827476);  // both tiny models share the architecture
}

TEST_P(UNetGolden, MatchesDiffusersAtEveryTimestepCase) {
  TinyUNet m(model_dir_);
  const auto be = make_cpu_backend(Precision::F32);
  for (const char* id : kCases) {
    double scale = 0;
    const double err = run_case(m.unet, *be, id, &scale);
    report(cat(GetParam(), " ", id, " f32"), err, 1e-4, scale);
    EXPECT_LE(err, 1e-4) << id;
  }
}

// Every intermediate diffusers recorded for t500, compared where the network produced it, so a
// wrong connection is located to one module. The time embedding is computed once for the batch
// (both rows share t = 500), so its single row is compared against each golden row.
TEST_P(UNetGolden, IntermediatesMatchAtT500) {
  TinyUNet m(model_dir_);
  const auto be = make_cpu_backend(Precision::F32);
  const nlohmann::json& c = golden_->case_by_id("unet/t500");
  std::map<std::string, Tensor> seen;
  m.unet.forward(*be, golden_->tensor_ref(c["inputs"]["sample"]), timesteps_of(c),
                 golden_->tensor_ref(c["inputs"]["encoder_hidden_states"]),
                 [&](const std::string& name, const Tensor& t) { seen[name] = t.clone(); });
  ASSERT_TRUE(c.contains("intermediates"));
  EXPECT_EQ(seen.at("time_embedding").dim(0), 1);  // shared by both rows, not computed twice
  for (const auto& [name, ref] : c["intermediates"].items()) {
    ASSERT_TRUE(seen.count(name)) << "no hook output named " << name;
    const Tensor expected = golden_->tensor_ref(ref);
    const Tensor& got = seen[name];
    double err = 0;
    if (got.dim(0) == 1 && expected.dim(0) > 1) {
      for (int64_t b = 0; b < expected.dim(0); ++b)
        err = std::max(err, max_abs_diff(got, expected.slice(0, b, b + 1)));
    } else {
      err = max_abs_diff(got, expected);
    }
    // Same absolute bound as the outputs; every intermediate here stays below |x| ~ 4.2.
    report(cat(GetParam(), " t500 ", name), err, 1e-4, max_abs(expected));
    EXPECT_LE(err, 1e-4) << name;
  }
}

// One row run alone equals that row of the batch, and a per-row timestep tensor whose values
// are all equal gives exactly what the single shared timestep gives.
TEST_P(UNetGolden, BatchRowsAreIndependentAndEqualTimestepsShareTheEmbedding) {
  TinyUNet m(model_dir_);
  const auto be = make_cpu_backend(Precision::F32);
  const nlohmann::json& c = golden_->case_by_id("unet/t500");
  const Tensor sample = golden_->tensor_ref(c["inputs"]["sample"]);
  const Tensor context = golden_->tensor_ref(c["inputs"]["encoder_hidden_states"]);
  const Tensor expected = golden_->tensor_ref(c["outputs"]["sample"]);

  const Tensor row1 =
      m.unet.forward(*be, sample.slice(0, 1, 2).contiguous(), 500.0f, context.slice(0, 1, 2).contiguous());
  EXPECT_LE(max_abs_diff(row1, expected.slice(0, 1, 2)), 1e-4);

  Tensor both = Tensor::empty(Shape{2}, DType::F32);
  both.f32()[0] = both.f32()[1] = 500.0f;
  const Tensor shared_t = m.unet.forward(*be, sample, 500.0f, context);
  EXPECT_EQ(max_abs_diff(m.unet.forward(*be, sample, both, context), shared_t), 0.0);

  // Integer timesteps (as a scheduler's I64 tensor) are accepted and converted.
  const nlohmann::json& ps = golden_->case_by_id("unet/t_per_sample");
  Tensor ints = Tensor::empty(Shape{2}, DType::I64);
  ints.data<int64_t>()[0] = 999;
  ints.data<int64_t>()[1] = 1;
  const Tensor out = m.unet.forward(*be, golden_->tensor_ref(ps["inputs"]["sample"]), ints,
                                    golden_->tensor_ref(ps["inputs"]["encoder_hidden_states"]));
  EXPECT_LE(max_abs_diff(out, golden_->tensor_ref(ps["outputs"]["sample"])), 1e-4);
}

TEST_P(UNetGolden, AnyLatentSizeMultipleOfEightAndClearErrorsOtherwise) {
  TinyUNet m(model_dir_);
  const auto be = make_cpu_backend(Precision::F32);
  const Tensor context = golden_->tensor_ref(golden_->case_by_id("unet/t500")["inputs"]["encoder_hidden_states"]);
  const Tensor wide = Tensor::full(Shape{2, 4, 16, 24}, 0.5f);
  const Tensor out = m.unet.forward(*be, wide, 10.0f, context);
  EXPECT_EQ(out.shape(), Shape({2, 4, 16, 24}));
  EXPECT_LT(max_abs(out), 1e6);  // finite
  EXPECT_THROW(m.unet.forward(*be, Tensor::full(Shape{2, 4, 12, 8}, 0.f), 10.0f, context), Error);
  EXPECT_THROW(m.unet.forward(*be, Tensor::full(Shape{2, 3, 8, 8}, 0.f), 10.0f, context), Error);
  EXPECT_THROW(m.unet.forward(*be, Tensor::full(Shape{1, 4, 8, 8}, 0.f), 10.0f, context), Error);  // batch mismatch
  Tensor three_t = Tensor::full(Shape{3}, 1.0f);
  EXPECT_THROW(m.unet.forward(*be, Tensor::full(Shape{2, 4, 8, 8}, 0.f), three_t, context), Error);
}

// bf16 compute (oneDNN bf16 conv/matmul, f32 accumulation; norms and attention stay f32).
TEST_P(UNetGolden, Bf16ComputeStaysClose) {
  std::unique_ptr<Backend> be;
  try {
    be = make_cpu_backend(Precision::BF16);
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  TinyUNet m(model_dir_);
  for (const char* id : kCases) {
    double scale = 0;
    const double err = run_case(m.unet, *be, id, &scale);
    report(cat(GetParam(), " ", id, " bf16 compute"), err, kBf16Tolerance, scale);
    EXPECT_LE(err, kBf16Tolerance) << id;
  }
}

// Weights stored as f16, as in fp16 checkpoints, converted to f32 once at first use.
TEST_P(UNetGolden, F16StoredWeightsStayClose) {
  TinyUNet m(model_dir_, /*f16_weights=*/true);
  const auto be = make_cpu_backend(Precision::F32);
  for (const char* id : kCases) {
    double scale = 0;
    const double err = run_case(m.unet, *be, id, &scale);
    report(cat(GetParam(), " ", id, " f16 weights"), err, kF16Tolerance, scale);
    EXPECT_LE(err, kF16Tolerance) << id;
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, UNetGolden, ::testing::Values("tiny-sd1", "tiny-sd2"),
                         [](const auto& p) { return std::string(p.param) == "tiny-sd1" ? "sd1" : "sd2"; });

// ---- config parsing ----

nlohmann::json read_config(const std::filesystem::path& p) { return nlohmann::json::parse(std::ifstream(p)); }

TEST(UNetConfig, AttentionHeadDimMeansHeadsForSd1AndSd2) {
  OTTER_REQUIRE_SHARED(shared);
  const UNetConfig sd1 = UNetConfig::from_file(shared / "models/tiny-sd1/unet/config.json");
  EXPECT_EQ(sd1.attention_heads, std::vector<int>({8, 8, 8, 8}));
  EXPECT_EQ(sd1.mid_heads(), 8);
  EXPECT_FALSE(sd1.use_linear_projection);
  EXPECT_EQ(sd1.norm_num_groups, 8);
  EXPECT_EQ(sd1.time_embed_dim, 64);
  EXPECT_EQ(sd1.spatial_divisor(), 8);
  EXPECT_EQ(sd1.cross_attention_dim, std::vector<int>({32, 32, 32, 32}));

  const UNetConfig sd2 = UNetConfig::from_file(shared / "models/tiny-sd2/unet/config.json");
  EXPECT_EQ(sd2.attention_heads, std::vector<int>({2, 4, 4, 4}));
  EXPECT_EQ(sd2.mid_heads(), 4);
  EXPECT_EQ(sd2.up_heads(0), 4);
  EXPECT_EQ(sd2.up_heads(3), 2);  // the last up block mirrors down block 0
  EXPECT_TRUE(sd2.use_linear_projection);
  EXPECT_TRUE(sd2.upcast_attention);
  EXPECT_EQ(sd2.down_blocks[3], UNetDownBlockType::Down);
  EXPECT_EQ(sd2.up_blocks[0], UNetUpBlockType::Up);
}

TEST(UNetConfig, RejectsWhatItCannotRun) {
  OTTER_REQUIRE_SHARED(shared);
  const nlohmann::json base = read_config(shared / "models/tiny-sd2/unet/config.json");
  const auto fails = [&](const char* key, const nlohmann::json& value) {
    nlohmann::json j = base;
    j[key] = value;
    EXPECT_THROW(UNetConfig::from_json(j), Error) << key << " = " << value.dump();
  };
  fails("attention_head_dim", nlohmann::json::array({2, 4, 4}));  // wrong length
  fails("attention_head_dim", 3);                                 // 16 channels / 3 heads
  fails("class_embed_type", "timestep");
  fails("addition_embed_type", "text_time");
  fails("down_block_types", nlohmann::json::array({"CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                                                    "CrossAttnDownBlock2D", "DownBlock2D"}));
  fails("mid_block_type", "UNetMidBlock2DSimpleCrossAttn");
  fails("only_cross_attention", true);
  fails("resnet_time_scale_shift", "scale_shift");
  fails("_class_name", "UNet2DModel");
  fails("norm_num_groups", 5);
  fails("norm_num_groups", 0);   // a division by zero in the channel check before it was refused
  fails("norm_num_groups", -8);
  nlohmann::json huge = base["block_out_channels"];
  huge[0] = 1 << 30;  // 4x that (the default time embedding width) overflows an int
  nlohmann::json with_huge = base;
  with_huge["block_out_channels"] = huge;
  try {
    UNetConfig::from_json(with_huge);
    ADD_FAILURE() << "block_out_channels[0] = 2^30 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block_out_channels[0] = 1073741824 is not in 1..1048576"), std::string::npos)
        << e.what();
  }
  fails("in_channels", 0);
  // Explicit head counts are honoured (diffusers' intended meaning) rather than rejected.
  nlohmann::json heads = base;
  heads["num_attention_heads"] = 2;
  EXPECT_EQ(UNetConfig::from_json(heads).attention_heads, std::vector<int>({2, 2, 2, 2}));
}

TEST(UNetConfig, WrongConfigForTheWeightsNamesTheTensor) {
  OTTER_REQUIRE_SHARED(shared);
  // SD1 weights (1x1-conv projections) with SD2's config (linear projections).
  const SafetensorsSource file(shared / "models/tiny-sd1/unet/diffusion_pytorch_model.safetensors");
  Weights w(file);
  try {
    UNet unet(UNetConfig::from_file(shared / "models/tiny-sd2/unet/config.json"), w);
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("proj_in.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace otter

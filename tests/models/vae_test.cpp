// The VAE (AutoencoderKL) against diffusers' outputs for both tiny models: decoding (with and
// without the scaling factor, every intermediate), encoding (moments, mean, clamped logvar, std,
// a seeded sample), the legacy attention names, bf16 compute and f16-stored weights.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>

#include "core/error.h"
#include "io/safetensors_source.h"
#include "models/vae.h"
#include "sampling/torch_cpu_generator.h"
#include "support/compare.h"
#include "support/converted_source.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

using testing::Golden;
using testing::max_abs;
using testing::max_abs_diff;

// Reduced-precision bounds, about 3x the largest error measured on both models (decoded
// images reach |x| ~ 4, encoder means ~ 8):
//  * bf16 compute (conv/matmul operands rounded to 8 significant bits, f32 accumulation,
//    norms and attention in f32): measured decode max 0.059 (sd2), encoder mean max 0.175
//    (sd2; 2.3 % of its max |mean| 7.6 — the encoder runs ~25 convolutions at 64x64).
//  * f16-stored weights (each weight rounded once to 11 significant bits, f32 compute):
//    measured decode max 0.0062 (sd1), encoder mean max 0.0108 (sd2).
constexpr double kBf16DecodeTolerance = 0.2;
constexpr double kBf16EncodeTolerance = 0.5;
constexpr double kF16DecodeTolerance = 0.02;
constexpr double kF16EncodeTolerance = 0.03;

// Every float tensor of another source rounded to f16, as an f16 checkpoint would hand it out.
class F16Source : public testing::ConvertedSource {
 public:
  explicit F16Source(const TensorSource& inner) : ConvertedSource(inner, DType::F16) {}
};

// The same tensors with the mid-block attention under the names older diffusers VAEs use
// (query/key/value/proj_attn instead of to_q/to_k/to_v/to_out.0).
class LegacyAttentionNames : public TensorSource {
 public:
  explicit LegacyAttentionNames(const TensorSource& inner) : inner_(inner) {
    for (const std::string& n : inner.names()) {
      std::string legacy = n;
      for (const auto& [from, to] : kRenames) {
        const size_t at = legacy.find(from);
        if (at != std::string::npos) legacy.replace(at, from.size(), to);
      }
      to_inner_[legacy] = n;
    }
  }
  bool has(const std::string& name) const override { return to_inner_.count(name) != 0; }
  Tensor get(const std::string& name) const override { return inner_.get(to_inner_.at(name)); }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& kv : to_inner_) out.push_back(kv.first);
    return out;
  }
  std::string origin() const override { return inner_.origin() + " (legacy attention names)"; }

 private:
  inline static const std::pair<std::string, std::string> kRenames[] = {
      {"attentions.0.to_q.", "attentions.0.query."},
      {"attentions.0.to_k.", "attentions.0.key."},
      {"attentions.0.to_v.", "attentions.0.value."},
      {"attentions.0.to_out.0.", "attentions.0.proj_attn."}};
  const TensorSource& inner_;
  std::map<std::string, std::string> to_inner_;
};

void report(const std::string& what, double err, double tol, double scale) {
  std::printf("[ metric   ] %-45s max|d| = %.3g (tolerance %.3g, max|ref| = %.3g)\n", what.c_str(), err, tol, scale);
}

class VaeGolden : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const auto shared = testing::shared_dir();
    if (!shared) GTEST_SKIP() << "reference data ../shared not found (set OTTER_SHARED_DIR)";
    model_dir_ = *shared / "models" / GetParam();
    file_.emplace(model_dir_ / "vae" / "diffusion_pytorch_model.safetensors");
    golden_.emplace(*shared / "golden" / (std::string(GetParam()) + "_components.json"));
  }
  // A VAE over `source`, after checking that it used every tensor.
  Vae load(const TensorSource& source) {
    Weights w(source);
    Vae vae(VaeConfig::from_file(model_dir_ / "vae" / "config.json"), w);
    w.check_all_used();
    return vae;
  }
  Tensor ref(const std::string& case_id, const char* group, const char* key) {
    return golden_->tensor_ref(golden_->case_by_id(case_id)[group][key]);
  }
  // Decode and encode errors of `vae` on `be`: {decode max|d|, encoder mean max|d|}.
  std::pair<double, double> decode_encode_errors(Vae& vae, Backend& be) {
    const double dec = max_abs_diff(vae.decode(be, ref("vae/decode", "inputs", "latents")),
                                    ref("vae/decode", "outputs", "sample"));
    const LatentDistribution d = vae.encode(be, ref("vae/encode", "inputs", "image"));
    return {dec, max_abs_diff(d.mean, ref("vae/encode", "outputs", "mean"))};
  }
  double decode_scale() { return max_abs(ref("vae/decode", "outputs", "sample")); }
  double mean_scale() { return max_abs(ref("vae/encode", "outputs", "mean")); }

  std::filesystem::path model_dir_;
  std::optional<SafetensorsSource> file_;
  std::optional<Golden> golden_;
};

TEST_P(VaeGolden, LoadsEveryTensorAndCountsParametersExactly) {
  const Vae vae = load(*file_);
  int64_t total = 0;
  for (const std::string& n : file_->names()) total += file_->get(n).numel();
  EXPECT_EQ(vae.parameter_count(), total);
  EXPECT_EQ(vae.parameter_count(), 354391);
  EXPECT_TRUE(vae.has_encoder());
  EXPECT_EQ(vae.config().downscale_factor(), 8);
}

TEST_P(VaeGolden, DecodeMatchesDiffusers) {
  Vae vae = load(*file_);
  const auto be = make_cpu_backend(Precision::F32);
  const Tensor expected = ref("vae/decode", "outputs", "sample");
  // decode() divides by scaling_factor itself; decode_raw() takes the divided latents.
  const Tensor scaled = vae.decode(*be, ref("vae/decode", "inputs", "latents"));
  const Tensor raw = vae.decode_raw(*be, ref("vae/decode", "inputs", "decoder_input"));
  ASSERT_EQ(scaled.shape(), expected.shape());
  report(cat(GetParam(), " vae/decode decode()"), max_abs_diff(scaled, expected), 1e-4, max_abs(expected));
  report(cat(GetParam(), " vae/decode decode_raw()"), max_abs_diff(raw, expected), 1e-4, max_abs(expected));
  EXPECT_LE(max_abs_diff(scaled, expected), 1e-4);
  EXPECT_LE(max_abs_diff(raw, expected), 1e-4);
}

// The golden intermediates are of batch element 0 only.
TEST_P(VaeGolden, DecodeIntermediatesMatch) {
  Vae vae = load(*file_);
  const auto be = make_cpu_backend(Precision::F32);
  std::map<std::string, Tensor> seen;
  vae.decode_raw(*be, ref("vae/decode", "inputs", "decoder_input"),
                 [&](const std::string& name, const Tensor& t) { seen[name] = t.slice(0, 0, 1).clone(); });
  const nlohmann::json& c = golden_->case_by_id("vae/decode");
  ASSERT_TRUE(c.contains("intermediates"));
  for (const auto& [name, r] : c["intermediates"].items()) {
    ASSERT_TRUE(seen.count(name)) << "no hook output named " << name;
    const Tensor expected = golden_->tensor_ref(r);
    const double err = max_abs_diff(seen[name], expected);
    report(cat(GetParam(), " decode ", name), err, 1e-4, max_abs(expected));
    EXPECT_LE(err, 1e-4) << name;
  }
}

TEST_P(VaeGolden, EncodeMatchesDiffusers) {
  Vae vae = load(*file_);
  const auto be = make_cpu_backend(Precision::F32);
  Tensor moments;
  const LatentDistribution d = vae.encode(*be, ref("vae/encode", "inputs", "image"), [&](const std::string& name,
                                                                                       const Tensor& t) {
    if (name == "moments") moments = t.clone();
  });
  const auto check = [&](const char* what, const Tensor& got, double tol) {
    const Tensor expected = ref("vae/encode", "outputs", what);
    const double err = max_abs_diff(got, expected);
    report(cat(GetParam(), " vae/encode ", what), err, tol, max_abs(expected));
    EXPECT_LE(err, tol) << what;
  };
  // The suggested bound for the encoder mean is 3e-4 (its f32-vs-f64 floor is 7e-6 at values
  // ~8); logvar and std are smaller and get the usual 1e-4.
  check("moments", moments, 3e-4);
  check("mean", d.mean, 3e-4);
  check("logvar", d.logvar, 1e-4);
  check("std", d.std, 1e-4);

  // diffusers' sample(): mean + std * torch.randn(mean.shape, Generator().manual_seed(0)).
  TorchCpuGenerator gen(0);
  const Tensor sample = d.sample(*be, gen);
  check("sample_seed0", sample, 3e-4);
  check("latents_scaled_seed0", vae.scale_latents(*be, sample), 3e-4 * 0.18215);
}

TEST_P(VaeGolden, LegacyAttentionNamesGiveIdenticalResults) {
  Vae modern = load(*file_);
  const LegacyAttentionNames legacy_source(*file_);
  ASSERT_TRUE(legacy_source.has("decoder.mid_block.attentions.0.query.weight"));
  ASSERT_FALSE(legacy_source.has("decoder.mid_block.attentions.0.to_q.weight"));
  Vae legacy = load(legacy_source);
  EXPECT_EQ(legacy.parameter_count(), modern.parameter_count());
  const auto be = make_cpu_backend(Precision::F32);
  const Tensor z = ref("vae/decode", "inputs", "decoder_input");
  EXPECT_EQ(max_abs_diff(legacy.decode_raw(*be, z), modern.decode_raw(*be, z)), 0.0);
  const Tensor image = ref("vae/encode", "inputs", "image");
  EXPECT_EQ(max_abs_diff(legacy.encode(*be, image).mean, modern.encode(*be, image).mean), 0.0);
}

TEST_P(VaeGolden, Bf16ComputeStaysClose) {
  std::unique_ptr<Backend> be;
  try {
    be = make_cpu_backend(Precision::BF16);
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  Vae vae = load(*file_);
  const auto [dec, enc] = decode_encode_errors(vae, *be);
  report(cat(GetParam(), " vae/decode bf16 compute"), dec, kBf16DecodeTolerance, decode_scale());
  report(cat(GetParam(), " vae/encode mean bf16 compute"), enc, kBf16EncodeTolerance, mean_scale());
  EXPECT_LE(dec, kBf16DecodeTolerance);
  EXPECT_LE(enc, kBf16EncodeTolerance);
}

TEST_P(VaeGolden, F16StoredWeightsStayClose) {
  const F16Source f16(*file_);
  Vae vae = load(f16);
  const auto be = make_cpu_backend(Precision::F32);
  const auto [dec, enc] = decode_encode_errors(vae, *be);
  report(cat(GetParam(), " vae/decode f16 weights"), dec, kF16DecodeTolerance, decode_scale());
  report(cat(GetParam(), " vae/encode mean f16 weights"), enc, kF16EncodeTolerance, mean_scale());
  EXPECT_LE(dec, kF16DecodeTolerance);
  EXPECT_LE(enc, kF16EncodeTolerance);
}

TEST_P(VaeGolden, RejectsBadInputs) {
  Vae vae = load(*file_);
  const auto be = make_cpu_backend(Precision::F32);
  EXPECT_THROW(vae.decode(*be, Tensor::full(Shape{1, 3, 8, 8}, 0.f)), Error);    // 3 latent channels
  EXPECT_THROW(vae.encode(*be, Tensor::full(Shape{1, 3, 60, 64}, 0.f)), Error);  // not a multiple of 8
  EXPECT_THROW(vae.encode(*be, Tensor::full(Shape{1, 4, 64, 64}, 0.f)), Error);  // RGBA
}

INSTANTIATE_TEST_SUITE_P(TinyModels, VaeGolden, ::testing::Values("tiny-sd1", "tiny-sd2"),
                         [](const auto& p) { return std::string(p.param) == "tiny-sd1" ? "sd1" : "sd2"; });

// ---- config ----

TEST(VaeConfig, ParsesTinyConfigAndRejectsOtherArchitectures) {
  OTTER_REQUIRE_SHARED(shared);
  const std::filesystem::path path = shared / "models/tiny-sd1/vae/config.json";
  const VaeConfig c = VaeConfig::from_file(path);
  EXPECT_EQ(c.block_out_channels, std::vector<int>({16, 16, 32, 32}));
  EXPECT_EQ(c.layers_per_block, 2);
  EXPECT_EQ(c.norm_num_groups, 8);
  EXPECT_EQ(c.latent_channels, 4);
  EXPECT_FLOAT_EQ(c.scaling_factor, 0.18215f);
  EXPECT_EQ(c.shift_factor, 0.0f);

  const nlohmann::json base = nlohmann::json::parse(std::ifstream(path));
  const auto fails = [&](const char* key, const nlohmann::json& value) {
    nlohmann::json j = base;
    j[key] = value;
    EXPECT_THROW(VaeConfig::from_json(j), Error) << key << " = " << value.dump();
  };
  fails("_class_name", "AutoencoderTiny");
  fails("up_block_types", nlohmann::json::array({"UpDecoderBlock2D"}));  // wrong count
  fails("down_block_types", nlohmann::json::array({"DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D",
                                                    "DownEncoderBlock2D"}));
  fails("latents_mean", nlohmann::json::array({0.1, 0.2, 0.3, 0.4}));
  fails("norm_num_groups", 5);
  // Found by fuzz_model_config: 0 groups divided the channel counts by zero (SIGFPE) before any check.
  fails("norm_num_groups", 0);
  fails("norm_num_groups", -8);
  fails("latent_channels", 0);
  fails("in_channels", -3);
}

// A decoder-only file (no encoder.* tensors) loads; encode() then says why it cannot run.
TEST(Vae, DecoderOnlyWeightsLoadAndEncodeExplains) {
  OTTER_REQUIRE_SHARED(shared);
  class DecoderOnly : public TensorSource {
   public:
    explicit DecoderOnly(const TensorSource& inner) : inner_(inner) {}
    bool has(const std::string& n) const override { return keep(n) && inner_.has(n); }
    Tensor get(const std::string& n) const override { return inner_.get(n); }
    std::vector<std::string> names() const override {
      std::vector<std::string> out;
      for (const std::string& n : inner_.names())
        if (keep(n)) out.push_back(n);
      return out;
    }
    std::string origin() const override { return "decoder-only view"; }

   private:
    static bool keep(const std::string& n) { return n.rfind("encoder.", 0) != 0 && n.rfind("quant_conv.", 0) != 0; }
    const TensorSource& inner_;
  };
  const SafetensorsSource file(shared / "models/tiny-sd1/vae/diffusion_pytorch_model.safetensors");
  const DecoderOnly source(file);
  Weights w(source);
  Vae vae(VaeConfig::from_file(shared / "models/tiny-sd1/vae/config.json"), w);
  w.check_all_used();
  EXPECT_FALSE(vae.has_encoder());
  const auto be = make_cpu_backend(Precision::F32);
  try {
    vae.encode(*be, Tensor::full(Shape{1, 3, 64, 64}, 0.f));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no encoder"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace otter

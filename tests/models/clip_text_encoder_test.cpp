// The CLIP text encoder against diffusers/transformers goldens (tiny-sd1: quick_gelu, SD1
// padding with EOS; tiny-sd2: erf GELU, padding with 0), plus clip skip, fewer layers than the
// file holds, bf16 compute, f16-stored weights and the loading errors.
#include "models/clip_text_encoder.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <map>

#include "core/cpu_features.h"
#include "io/safetensors_source.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

using testing::Golden;
using testing::max_abs;
using testing::max_abs_diff;

// README section 5: component outputs |Δ| <= 1e-4 (float32 vs float64 floor is ~2e-6).
constexpr double kF32Tolerance = 1e-4;

// Presents another source's tensors after a transformation, optionally with extra tensors:
// f16 copies of the weights, a wrong shape, an unexpected name.
class TransformedSource : public TensorSource {
 public:
  using Transform = std::function<Tensor(const std::string& name, const Tensor& stored)>;
  TransformedSource(const TensorSource& inner, Transform transform, std::map<std::string, Tensor> extra = {})
      : inner_(inner), transform_(std::move(transform)), extra_(std::move(extra)) {}
  bool has(const std::string& name) const override { return extra_.count(name) || inner_.has(name); }
  Tensor get(const std::string& name) const override {
    const auto it = extra_.find(name);
    return it != extra_.end() ? it->second : transform_(name, inner_.get(name));
  }
  std::vector<std::string> names() const override {
    std::vector<std::string> n = inner_.names();
    for (const auto& [name, t] : extra_) n.push_back(name);
    return n;
  }
  std::string origin() const override { return "transformed(" + inner_.origin() + ")"; }

 private:
  const TensorSource& inner_;
  Transform transform_;
  std::map<std::string, Tensor> extra_;
};

struct Model {
  std::filesystem::path dir;   // models/tiny-sdX/text_encoder
  std::filesystem::path golden;  // golden/tiny-sdX_components.json
};

Model model_paths(const std::filesystem::path& shared, const std::string& name) {
  return {shared / "models" / name / "text_encoder", shared / "golden" / (name + "_components.json")};
}

// [B, L, N, C] -> entry l as a contiguous [B, N, C].
Tensor hidden_state_entry(const Tensor& all, int64_t l) {
  return all.slice(1, l, l + 1).contiguous().reshape(Shape{all.dim(0), all.dim(2), all.dim(3)});
}

// LayerNorm over the last dimension in double: the naive reference for the final LayerNorm.
Tensor naive_layer_norm(const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in, double eps) {
  const Tensor x = x_in.to(DType::F64), gamma = gamma_in.to(DType::F64), beta = beta_in.to(DType::F64);
  Tensor y = Tensor::empty(x.shape(), DType::F64);
  const int64_t C = x.dim(-1);
  for (int64_t r = 0; r < x.numel() / C; ++r) {
    const double* in = x.data<double>() + r * C;
    double* out = y.data<double>() + r * C;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += in[c];
    mean /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) var += (in[c] - mean) * (in[c] - mean);
    var /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c)
      out[c] = (in[c] - mean) / std::sqrt(var + eps) * gamma.data<double>()[c] + beta.data<double>()[c];
  }
  return y;
}

struct GoldenCase {
  Tensor ids, last_hidden_state, hidden_states, pooler_output;
};

GoldenCase load_case(const Golden& g) {
  const nlohmann::json& c = g.case_by_id("text_encoder");
  return {g.tensor_ref(c["inputs"]["input_ids"]), g.tensor_ref(c["outputs"]["last_hidden_state"]),
          g.tensor_ref(c["outputs"]["hidden_states"]), g.tensor_ref(c["outputs"]["pooler_output"])};
}

// Largest error over all three outputs, relative to the largest reference magnitude.
double max_rel_error(const ClipTextOutput& out, const GoldenCase& ref) {
  double err = max_abs_diff(out.last_hidden_state, ref.last_hidden_state) / max_abs(ref.last_hidden_state);
  err = std::max(err, max_abs_diff(out.pooler_output, ref.pooler_output) / max_abs(ref.pooler_output));
  for (int64_t l = 0; l < ref.hidden_states.dim(1); ++l) {
    const Tensor expected = hidden_state_entry(ref.hidden_states, l);
    err = std::max(err, max_abs_diff(out.hidden_states.at(static_cast<size_t>(l)), expected) / max_abs(expected));
  }
  return err;
}

void check_golden(const std::string& name) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, name);
  const ClipTextConfig config = ClipTextConfig::from_file(m.dir / "config.json");
  const SafetensorsSource source(m.dir / "model.safetensors");
  auto backend = make_cpu_backend(Precision::F32);
  ClipTextEncoder encoder(config, source, *backend);
  const GoldenCase ref = load_case(Golden(m.golden));

  const ClipTextOutput out = encoder.encode(ref.ids, {.clip_skip = 1, .output_hidden_states = true});
  ASSERT_EQ(out.hidden_states.size(), static_cast<size_t>(ref.hidden_states.dim(1)));
  const double last = max_abs_diff(out.last_hidden_state, ref.last_hidden_state);
  const double pooled = max_abs_diff(out.pooler_output, ref.pooler_output);
  double hidden = 0;
  for (int64_t l = 0; l < ref.hidden_states.dim(1); ++l) {
    const double e = max_abs_diff(out.hidden_states[static_cast<size_t>(l)], hidden_state_entry(ref.hidden_states, l));
    EXPECT_LE(e, kF32Tolerance) << "hidden_states[" << l << "]";
    hidden = std::max(hidden, e);
  }
  EXPECT_LE(last, kF32Tolerance);
  EXPECT_LE(pooled, kF32Tolerance);
  std::cout << name << " f32 max |Δ|: last_hidden_state " << last << ", hidden_states " << hidden
            << ", pooler_output " << pooled << "\n";
}

}  // namespace

TEST(ClipTextEncoder, MatchesGoldenTinySd1QuickGelu) { check_golden("tiny-sd1"); }
TEST(ClipTextEncoder, MatchesGoldenTinySd2ErfGelu) { check_golden("tiny-sd2"); }

TEST(ClipTextEncoder, ConfigIsReadFromJson) {
  OTTER_REQUIRE_SHARED(shared);
  const ClipTextConfig c1 = ClipTextConfig::from_file(model_paths(shared, "tiny-sd1").dir / "config.json");
  EXPECT_EQ(c1.hidden_size, 32);
  EXPECT_EQ(c1.intermediate_size, 37);
  EXPECT_EQ(c1.num_hidden_layers, 3);
  EXPECT_EQ(c1.num_attention_heads, 4);
  EXPECT_EQ(c1.vocab_size, 49408);
  EXPECT_EQ(c1.max_position_embeddings, 77);
  EXPECT_FLOAT_EQ(c1.layer_norm_eps, 1e-5f);
  EXPECT_EQ(c1.hidden_act, Activation::QuickGelu);
  EXPECT_EQ(c1.eos_token_id, 49407);  // the file says 2, HF's legacy placeholder
  const ClipTextConfig c2 = ClipTextConfig::from_file(model_paths(shared, "tiny-sd2").dir / "config.json");
  EXPECT_EQ(c2.hidden_act, Activation::GeluErf);
}

TEST(ClipTextEncoder, ConfigErrorsNameTheKey) {
  nlohmann::json j = {{"hidden_size", 32}, {"intermediate_size", 37}, {"num_attention_heads", 4}};
  try {
    ClipTextConfig::from_json(j, "te/config.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_hidden_layers"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("te/config.json"), std::string::npos) << e.what();
  }
  j["num_hidden_layers"] = 3;
  j["hidden_act"] = "swish";
  EXPECT_THROW(ClipTextConfig::from_json(j), Error);
  j["hidden_act"] = "gelu";
  j["num_attention_heads"] = 5;  // 32 does not split into 5 heads
  EXPECT_THROW(ClipTextConfig::from_json(j), Error);
  j["num_attention_heads"] = 4;
  j["eos_token_id"] = 49407;
  EXPECT_EQ(ClipTextConfig::from_json(j).eos_token_id, 49407);
}

TEST(ClipTextEncoder, ParameterCountIsExact) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, "tiny-sd1");
  const ClipTextConfig c = ClipTextConfig::from_file(m.dir / "config.json");
  const SafetensorsSource source(m.dir / "model.safetensors");
  auto backend = make_cpu_backend();
  const ClipTextEncoder encoder(c, source, *backend);
  const int64_t C = c.hidden_size, I = c.intermediate_size;
  const int64_t per_layer = 4 * (C * C + C) + (I * C + I) + (C * I + C) + 2 * (2 * C);
  const int64_t expected = c.vocab_size * C + c.max_position_embeddings * C + 3 * per_layer + 2 * C;
  EXPECT_EQ(encoder.parameter_count(), expected);
  EXPECT_EQ(encoder.parameter_count(), 1'603'951);  // 49408·32 + 77·32 + 3·6789 + 64
  EXPECT_EQ(encoder.ignored_layers_in_source(), 0);
}

TEST(ClipTextEncoder, IdsAsI32TensorOrIntVectorGiveTheSameResult) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, "tiny-sd2");
  const SafetensorsSource source(m.dir / "model.safetensors");
  auto backend = make_cpu_backend();
  ClipTextEncoder encoder(ClipTextConfig::from_file(m.dir / "config.json"), source, *backend);
  const GoldenCase ref = load_case(Golden(m.golden));

  const ClipTextOutput from_i64 = encoder.encode(ref.ids);
  const ClipTextOutput from_i32 = encoder.encode(ref.ids.to(DType::I32));
  std::vector<int> flat(static_cast<size_t>(ref.ids.numel()));
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = static_cast<int>(ref.ids.data<int64_t>()[i]);
  const ClipTextOutput from_vector = encoder.encode(flat, ref.ids.dim(0));
  EXPECT_EQ(max_abs_diff(from_i64.last_hidden_state, from_i32.last_hidden_state), 0.0);
  EXPECT_EQ(max_abs_diff(from_i64.last_hidden_state, from_vector.last_hidden_state), 0.0);
  EXPECT_EQ(max_abs_diff(from_i64.pooler_output, from_vector.pooler_output), 0.0);
  EXPECT_TRUE(from_i64.hidden_states.empty());  // only materialised on request
}

TEST(ClipTextEncoder, ClipSkipKIsFinalLayerNormOfKthHiddenStateFromTheEnd) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, "tiny-sd1");
  const SafetensorsSource source(m.dir / "model.safetensors");
  auto backend = make_cpu_backend();
  const ClipTextConfig config = ClipTextConfig::from_file(m.dir / "config.json");
  ClipTextEncoder encoder(config, source, *backend);
  const GoldenCase ref = load_case(Golden(m.golden));

  for (int skip = 1; skip <= 3; ++skip) {
    const ClipTextOutput out = encoder.encode(ref.ids, {.clip_skip = skip, .output_hidden_states = true});
    // hidden_states[-skip] of the full model (index 3 = last layer), through final_layer_norm.
    const int64_t layer = 3 - (skip - 1);
    const Tensor expected = naive_layer_norm(hidden_state_entry(ref.hidden_states, layer),
                                             source.get("text_model.final_layer_norm.weight"),
                                             source.get("text_model.final_layer_norm.bias"), config.layer_norm_eps);
    const double err = max_abs_diff(out.last_hidden_state, expected);
    EXPECT_LE(err, kF32Tolerance) << "clip_skip " << skip;
    EXPECT_EQ(out.hidden_states.size(), static_cast<size_t>(layer + 1)) << "layers after the chosen one are not run";
    std::cout << "clip_skip " << skip << " max |Δ| vs naive final LN of golden hidden_states[" << layer << "]: " << err
              << "\n";
  }
  EXPECT_THROW(encoder.encode(ref.ids, {.clip_skip = 0}), Error);
  EXPECT_THROW(encoder.encode(ref.ids, {.clip_skip = 4}), Error);
}

TEST(ClipTextEncoder, ConfigWithFewerLayersThanTheFileRunsOnlyThose) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, "tiny-sd1");
  const SafetensorsSource source(m.dir / "model.safetensors");
  auto backend = make_cpu_backend();
  const ClipTextConfig full_config = ClipTextConfig::from_file(m.dir / "config.json");
  ClipTextConfig two = full_config;
  two.num_hidden_layers = 2;
  ClipTextEncoder full(full_config, source, *backend);
  ClipTextEncoder truncated(two, source, *backend);  // must not complain about layer 2's tensors
  EXPECT_EQ(truncated.ignored_layers_in_source(), 1);
  const GoldenCase ref = load_case(Golden(m.golden));

  const ClipTextOutput a = truncated.encode(ref.ids, {.output_hidden_states = true});
  const ClipTextOutput b = full.encode(ref.ids, {.clip_skip = 2});
  EXPECT_EQ(max_abs_diff(a.last_hidden_state, b.last_hidden_state), 0.0);
  ASSERT_EQ(a.hidden_states.size(), 3u);
  EXPECT_LE(max_abs_diff(a.hidden_states[2], hidden_state_entry(ref.hidden_states, 2)), kF32Tolerance);
}

TEST(ClipTextEncoder, PoolsAtFirstEosOrAtLargestIdWithoutEos) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, "tiny-sd2");
  const SafetensorsSource source(m.dir / "model.safetensors");
  auto backend = make_cpu_backend();
  ClipTextEncoder encoder(ClipTextConfig::from_file(m.dir / "config.json"), source, *backend);
  // Row 0: EOS at 3 and again at 5; row 1: no EOS (and no BOS), largest id (900) first at 2.
  const std::vector<int> ids{49406, 320, 1000, 49407, 0, 49407, 320, 5, 900, 900, 7, 0};
  const ClipTextOutput out = encoder.encode(ids, 2);
  const auto row = [&](int64_t b, int64_t n) {
    return out.last_hidden_state.slice(0, b, b + 1).slice(1, n, n + 1).contiguous().reshape(Shape{1, 32});
  };
  EXPECT_EQ(max_abs_diff(out.pooler_output.slice(0, 0, 1), row(0, 3)), 0.0);
  EXPECT_EQ(max_abs_diff(out.pooler_output.slice(0, 1, 2), row(1, 2)), 0.0);
}

TEST(ClipTextEncoder, Bf16ComputeStaysCloseToGolden) {
  OTTER_REQUIRE_SHARED(shared);
  if (!cpu_features().avx512f) GTEST_SKIP() << "bf16 compute needs AVX-512";
  auto backend = make_cpu_backend(Precision::BF16);
  for (const std::string name : {"tiny-sd1", "tiny-sd2"}) {
    const Model m = model_paths(shared, name);
    const SafetensorsSource source(m.dir / "model.safetensors");
    ClipTextEncoder encoder(ClipTextConfig::from_file(m.dir / "config.json"), source, *backend);
    const GoldenCase ref = load_case(Golden(m.golden));
    const double err = max_rel_error(encoder.encode(ref.ids, {.output_hidden_states = true}), ref);
    // Every linear rounds its input and weights to bf16 (unit roundoff u = 2^-8 = 3.9e-3); the
    // errors grow through the 3 layers (hidden_states[1..3]: 5.5e-3, 8.5e-3, 8.6e-3 for sd1) and
    // the final LayerNorm amplifies them in low-variance rows. Measured 1.38e-2 (sd1) / 1.24e-2
    // (sd2) = ~3.5u relative to max|ref| (last_hidden_state is the worst output); the bound leaves
    // ~2x margin for other CPUs' bf16 kernels (native AVX512-BF16 vs emulated).
    EXPECT_LE(err, 3e-2) << name;
    std::cout << name << " bf16 compute: max |Δ| / max|ref| = " << err << "\n";
  }
}

namespace {

// Encodes the golden ids with every float weight converted to `stored` in memory (computation
// stays f32) and returns the error relative to max|ref|.
double error_with_weights_stored_as(const std::filesystem::path& shared, const std::string& name, DType stored) {
  const Model m = model_paths(shared, name);
  const SafetensorsSource file(m.dir / "model.safetensors");
  const TransformedSource converted(file, [stored](const std::string&, const Tensor& t) {
    return dtype_is_float(t.dtype()) ? t.to(stored) : t;
  });
  auto backend = make_cpu_backend(Precision::F32);
  ClipTextEncoder encoder(ClipTextConfig::from_file(m.dir / "config.json"), converted, *backend);
  const GoldenCase ref = load_case(Golden(m.golden));
  const double err = max_rel_error(encoder.encode(ref.ids, {.output_hidden_states = true}), ref);
  std::cout << name << " " << dtype_name(stored) << " weights: max |Δ| / max|ref| = " << err << "\n";
  return err;
}

}  // namespace

TEST(ClipTextEncoder, F16StoredWeightsStayCloseToGolden) {
  OTTER_REQUIRE_SHARED(shared);
  // Only the weights are rounded (f16 unit roundoff u = 2^-11 = 4.9e-4, embeddings included:
  // hidden_states[0] is off by 3.5e-4 relative). Measured 2.26e-3 (sd1, last_hidden_state after
  // the final LayerNorm) / 1.31e-3 (sd2) = ~4.6u relative to max|ref|; the bound leaves ~2x margin.
  EXPECT_LE(error_with_weights_stored_as(shared, "tiny-sd1", DType::F16), 5e-3);
  EXPECT_LE(error_with_weights_stored_as(shared, "tiny-sd2", DType::F16), 5e-3);
}

TEST(ClipTextEncoder, Bf16StoredWeightsStayCloseToGolden) {
  OTTER_REQUIRE_SHARED(shared);
  // bf16 weights (u = 2^-8 = 3.9e-3), f32 compute: measured 1.25e-2 (sd1) / 9.8e-3 (sd2) = ~3.2u
  // relative to max|ref|; the bound leaves ~2.4x margin.
  EXPECT_LE(error_with_weights_stored_as(shared, "tiny-sd1", DType::BF16), 3e-2);
  EXPECT_LE(error_with_weights_stored_as(shared, "tiny-sd2", DType::BF16), 3e-2);
}

TEST(ClipTextEncoder, WrongShapeErrorNamesTensorAndBothShapes) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, "tiny-sd1");
  const SafetensorsSource file(m.dir / "model.safetensors");
  const std::string bad = "text_model.encoder.layers.1.mlp.fc1.weight";
  const TransformedSource wrong(file, [&](const std::string& name, const Tensor& t) {
    return name == bad ? t.slice(1, 0, 31).contiguous() : t;  // [37, 31] instead of [37, 32]
  });
  auto backend = make_cpu_backend();
  try {
    ClipTextEncoder encoder(ClipTextConfig::from_file(m.dir / "config.json"), wrong, *backend);
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    EXPECT_NE(msg.find("[37, 31]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[37, 32]"), std::string::npos) << msg;
  }
}

TEST(ClipTextEncoder, UnexpectedTensorIsAnError) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, "tiny-sd2");
  const SafetensorsSource file(m.dir / "model.safetensors");
  const TransformedSource extra(file, [](const std::string&, const Tensor& t) { return t; },
                                {{"text_projection.weight", Tensor::zeros(Shape{32, 32}, DType::F32)}});
  auto backend = make_cpu_backend();
  try {
    ClipTextEncoder encoder(ClipTextConfig::from_file(m.dir / "config.json"), extra, *backend);
    FAIL() << "expected an unused-tensor error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("text_projection.weight"), std::string::npos) << e.what();
  }
}

TEST(ClipTextEncoder, BadIdsAreErrors) {
  OTTER_REQUIRE_SHARED(shared);
  const Model m = model_paths(shared, "tiny-sd2");
  const SafetensorsSource source(m.dir / "model.safetensors");
  auto backend = make_cpu_backend();
  ClipTextEncoder encoder(ClipTextConfig::from_file(m.dir / "config.json"), source, *backend);
  try {
    encoder.encode(std::vector<int>{49406, 49408, 49407}, 1);
    FAIL() << "expected an id error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("49408 at [0, 1]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(encoder.encode(std::vector<int>(78, 0), 1), Error);         // more tokens than positions
  EXPECT_THROW(encoder.encode(std::vector<int>{1, 2, 3}, 2), Error);       // not equal-length rows
  EXPECT_THROW(encoder.encode(Tensor::zeros(Shape{1, 77}, DType::F32)), Error);  // not integer ids
}

}  // namespace otter

namespace otter {
namespace {

// An integer key given as a float that is not an integer in range is refused by name (a cast of
// 7.7e118 to an integer is undefined; found by tests/fuzz/fuzz_model_config).
TEST(ClipTextConfigJson, HugeFloatForAnIntegerKeyIsAnError) {
  nlohmann::json j = nlohmann::json::parse(R"({"hidden_size": 7.7e118})");
  try {
    (void)ClipTextConfig::from_json(j, "text_encoder/config.json");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"hidden_size\" must be an integer"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace otter

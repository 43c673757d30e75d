#include "models/clip_text_encoder.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/json_file.h"
#include "core/half.h"
#include "models/blocks.h"

namespace otter {
namespace {

// HF writes this placeholder into CLIP text configs made before it knew the real EOS id; its
// pooling then falls back to argmax(input_ids), which for the CLIP vocabulary is the first 49407.
constexpr int64_t kLegacyEosPlaceholder = 2;
constexpr int64_t kClipEosToken = 49407;

const std::string kLayerPrefix = "text_model.encoder.layers.";

Activation activation_from_name(const std::string& name, const std::string& origin) {
  if (name == "quick_gelu") return Activation::QuickGelu;
  if (name == "gelu") return Activation::GeluErf;  // transformers' "gelu" is the exact erf form
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::GeluTanh;
  throw Error(cat(origin, ": hidden_act \"", name,
                  "\" is not supported by the CLIP text encoder (supported: quick_gelu, gelu, gelu_new, "
                  "gelu_pytorch_tanh)"));
}

template <class T>
T read_key(const nlohmann::json& config, const char* key, const std::string& origin) {
  // A float where an integer is wanted is converted only when it is one, in range: nlohmann's cast
  // of 7.7e118 or NaN to an integer is undefined (found by tests/fuzz/fuzz_model_config).
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    if (config.contains(key) && !detail::convertible_to_integer<T>(config.at(key)))
      throw Error(cat(origin, ": text encoder config key \"", key, "\" must be an integer, got ", config.at(key).dump()));
  try {
    return config.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(origin, ": text encoder config key \"", key, "\" is ",
                    config.contains(key) ? "of the wrong type" : "missing", " (", e.what(), ")"));
  }
}

template <class T>
T read_key_or(const nlohmann::json& config, const char* key, T fallback, const std::string& origin) {
  return config.contains(key) && !config.at(key).is_null() ? read_key<T>(config, key, origin) : fallback;
}

// The layer index of a name under text_model.encoder.layers.{i}., or -1.
int layer_index_of(const std::string& name) {
  if (name.rfind(kLayerPrefix, 0) != 0) return -1;
  size_t pos = kLayerPrefix.size();
  int index = 0;
  bool any_digit = false;
  while (pos < name.size() && name[pos] >= '0' && name[pos] <= '9') {
    index = index * 10 + (name[pos] - '0');
    any_digit = true;
    ++pos;
  }
  return any_digit && pos < name.size() && name[pos] == '.' ? index : -1;
}

}  // namespace

// ---- config ----

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& config, const std::string& origin) {
  OTTER_CHECK(config.is_object(), origin, ": text encoder config must be a JSON object");
  ClipTextConfig c;
  c.hidden_size = read_key<int64_t>(config, "hidden_size", origin);
  c.intermediate_size = read_key<int64_t>(config, "intermediate_size", origin);
  c.num_hidden_layers = read_key<int>(config, "num_hidden_layers", origin);
  c.num_attention_heads = read_key<int>(config, "num_attention_heads", origin);
  c.vocab_size = read_key_or<int64_t>(config, "vocab_size", c.vocab_size, origin);
  c.max_position_embeddings = read_key_or<int64_t>(config, "max_position_embeddings", c.max_position_embeddings, origin);
  c.layer_norm_eps = read_key_or<float>(config, "layer_norm_eps", c.layer_norm_eps, origin);
  c.hidden_act = activation_from_name(read_key_or<std::string>(config, "hidden_act", "quick_gelu", origin), origin);
  const int64_t eos = read_key_or<int64_t>(config, "eos_token_id", kLegacyEosPlaceholder, origin);
  c.eos_token_id = eos == kLegacyEosPlaceholder ? kClipEosToken : eos;

  OTTER_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 && c.num_attention_heads > 0 &&
                  c.vocab_size > 0 && c.max_position_embeddings > 0,
              origin, ": text encoder sizes must be positive (hidden_size ", c.hidden_size, ", intermediate_size ",
              c.intermediate_size, ", num_hidden_layers ", c.num_hidden_layers, ", num_attention_heads ",
              c.num_attention_heads, ", vocab_size ", c.vocab_size, ", max_position_embeddings ",
              c.max_position_embeddings, ")");
  OTTER_CHECK(c.hidden_size % c.num_attention_heads == 0, origin, ": hidden_size ", c.hidden_size,
              " does not split into num_attention_heads ", c.num_attention_heads, " heads");
  OTTER_CHECK(c.layer_norm_eps > 0.0f && std::isfinite(c.layer_norm_eps), origin, ": layer_norm_eps must be positive, got ",
              c.layer_norm_eps);
  return c;
}

ClipTextConfig ClipTextConfig::from_file(const std::filesystem::path& config_json) {
  return from_json(read_json_file(config_json, "text encoder config"), config_json.string());
}

// ---- loading ----

Tensor ClipTextEncoder::get(Weights& weights, const std::string& name, const Shape& shape) {
  Tensor t = weights.get(name, shape);
  OTTER_CHECK(dtype_is_float(t.dtype()), "tensor '", name, "' has dtype ", dtype_name(t.dtype()),
              ", expected a float type (F32, F16, BF16)");
  parameter_count_ += t.numel();
  return t;
}

ClipTextEncoder::Layer ClipTextEncoder::load_layer(Weights& weights, int index) {
  const int64_t C = config_.hidden_size, I = config_.intermediate_size;
  const std::string p = cat(kLayerPrefix, index, ".");
  const auto norm = [&](const std::string& name) {
    return NormWeights{get(weights, p + name + ".weight", Shape{C}), get(weights, p + name + ".bias", Shape{C}),
                       config_.layer_norm_eps};
  };
  const auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    LinearWeights w;
    w.weight = get(weights, p + name + ".weight", Shape{out, in});
    w.bias = get(weights, p + name + ".bias", Shape{out});
    attach_lora(w, weights.lora_branches(p + name + ".weight"));
    prepared_.add(w.prepared);
    return w;
  };
  Layer layer;
  layer.layer_norm1 = norm("layer_norm1");
  layer.q_proj = linear("self_attn.q_proj", C, C);
  layer.k_proj = linear("self_attn.k_proj", C, C);
  layer.v_proj = linear("self_attn.v_proj", C, C);
  layer.out_proj = linear("self_attn.out_proj", C, C);
  layer.layer_norm2 = norm("layer_norm2");
  layer.fc1 = linear("mlp.fc1", I, C);
  layer.fc2 = linear("mlp.fc2", C, I);
  return layer;
}

ClipTextEncoder::ClipTextEncoder(const ClipTextConfig& config, const TensorSource& source, Backend& backend)
    : config_(config), backend_(backend) {
  Weights weights(source);
  const int64_t C = config_.hidden_size;
  token_embedding_ = get(weights, "text_model.embeddings.token_embedding.weight", Shape{config_.vocab_size, C})
                         .contiguous();
  // Small ([77, C]): converted once so the lookup only adds.
  position_embedding_ =
      get(weights, "text_model.embeddings.position_embedding.weight", Shape{config_.max_position_embeddings, C})
          .to(DType::F32);
  layers_.reserve(static_cast<size_t>(config_.num_hidden_layers));
  for (int i = 0; i < config_.num_hidden_layers; ++i) layers_.push_back(load_layer(weights, i));
  final_layer_norm_ = NormWeights{get(weights, "text_model.final_layer_norm.weight", Shape{C}),
                                  get(weights, "text_model.final_layer_norm.bias", Shape{C}), config_.layer_norm_eps};

  // Layers beyond the config's count are deliberately not run (SD 2.x uses the penultimate block
  // of OpenCLIP); they are exempt from the unused-tensor check and counted for the caller to report.
  std::vector<std::string> ignored{"position_ids"};
  std::set<int> extra_layers;
  for (const std::string& name : source.names()) {
    const int index = layer_index_of(name);
    if (index >= config_.num_hidden_layers) {
      ignored.push_back(name);
      extra_layers.insert(index);
    }
  }
  ignored_layers_ = static_cast<int>(extra_layers.size());
  weights.check_all_used(ignored);
}

// ---- running ----

ClipTextEncoder::Ids ClipTextEncoder::read_ids(const Tensor& ids) const {
  OTTER_CHECK(ids.rank() == 2, "text encoder input ids must be [batch, tokens], got ", ids.describe());
  OTTER_CHECK(ids.dtype() == DType::I64 || ids.dtype() == DType::I32,
              "text encoder input ids must be I64 or I32, got ", ids.describe());
  Ids out;
  out.batch = ids.dim(0);
  out.length = ids.dim(1);
  OTTER_CHECK(out.batch > 0 && out.length > 0, "text encoder input ids are empty: ", ids.describe());
  OTTER_CHECK(out.length <= config_.max_position_embeddings, "text encoder input has ", out.length,
              " tokens per sequence but the model has only ", config_.max_position_embeddings,
              " positions; truncate the prompt's tokens (the tokenizer does this at 77)");
  const Tensor as_i64 = ids.to(DType::I64);
  const int64_t* p = as_i64.data<int64_t>();
  out.values.assign(p, p + ids.numel());
  for (int64_t i = 0; i < ids.numel(); ++i)
    OTTER_CHECK(out.values[static_cast<size_t>(i)] >= 0 && out.values[static_cast<size_t>(i)] < config_.vocab_size,
                "token id ", out.values[static_cast<size_t>(i)], " at [", i / out.length, ", ", i % out.length,
                "] is outside the text encoder's vocabulary [0, ", config_.vocab_size, ")");
  return out;
}

Tensor ClipTextEncoder::embed(const Ids& ids) const {
  const int64_t C = config_.hidden_size;
  Tensor x = Tensor::empty(Shape{ids.batch, ids.length, C}, DType::F32);
  const DType table_type = token_embedding_.dtype();
  const auto* table = static_cast<const unsigned char*>(token_embedding_.raw());
  const size_t row_bytes = static_cast<size_t>(C) * dtype_size(table_type);
  const float* positions = position_embedding_.f32();
  float* out = x.f32();
  for (int64_t b = 0; b < ids.batch; ++b) {
    for (int64_t n = 0; n < ids.length; ++n) {
      const int64_t token = ids.values[static_cast<size_t>(b * ids.length + n)];
      float* row = out + (b * ids.length + n) * C;
      convert(table + static_cast<size_t>(token) * row_bytes, table_type, row, DType::F32, static_cast<size_t>(C));
      const float* position = positions + n * C;
      for (int64_t c = 0; c < C; ++c) row[c] += position[c];
    }
  }
  return x;
}

// Pre-LN block. Returns a new tensor and leaves `x` untouched, so the caller may keep `x` as a
// hidden state without copying it.
Tensor ClipTextEncoder::run_layer(Layer& layer, const Tensor& x) {
  const int heads = config_.num_attention_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(config_.hidden_size / heads));

  Tensor h = backend_.layer_norm(x, layer.layer_norm1);
  const Tensor q = backend_.linear(h, layer.q_proj);
  const Tensor k = backend_.linear(h, layer.k_proj);
  const Tensor v = backend_.linear(h, layer.v_proj);
  h = backend_.attention(q, k, v, heads, scale, /*causal=*/true);
  Tensor y = backend_.add(x, backend_.linear(h, layer.out_proj));

  h = backend_.layer_norm(y, layer.layer_norm2);
  h = backend_.activation(backend_.linear(h, layer.fc1), config_.hidden_act);
  backend_.add_inplace(y, backend_.linear(h, layer.fc2));
  return y;
}

Tensor ClipTextEncoder::pool(const Tensor& last_hidden_state, const Ids& ids) const {
  const int64_t C = config_.hidden_size;
  const Tensor states = last_hidden_state.to(DType::F32).contiguous();
  Tensor pooled = Tensor::empty(Shape{ids.batch, C}, DType::F32);
  for (int64_t b = 0; b < ids.batch; ++b) {
    const int64_t* row = ids.values.data() + b * ids.length;
    int64_t at = -1;
    for (int64_t n = 0; n < ids.length && at < 0; ++n)
      if (row[n] == config_.eos_token_id) at = n;
    if (at < 0) {  // no EOS: HF's legacy rule, the first largest id
      at = 0;
      for (int64_t n = 1; n < ids.length; ++n)
        if (row[n] > row[at]) at = n;
    }
    std::memcpy(pooled.f32() + b * C, states.f32() + (b * ids.length + at) * C, static_cast<size_t>(C) * sizeof(float));
  }
  return pooled;
}

ClipTextOutput ClipTextEncoder::encode(const Tensor& ids_tensor, const ClipTextOptions& options) {
  const int layer_count = config_.num_hidden_layers;
  OTTER_CHECK(options.clip_skip >= 1 && options.clip_skip <= layer_count, "clip_skip ", options.clip_skip,
              " is outside 1..", layer_count, " (1 = last layer, 2 = penultimate, ...; this text encoder has ",
              layer_count, " layers)");
  const Ids ids = read_ids(ids_tensor);

  ClipTextOutput out;
  Tensor x = embed(ids);
  if (options.output_hidden_states) out.hidden_states.push_back(x);
  const int layers_to_run = layer_count - options.clip_skip + 1;
  for (int i = 0; i < layers_to_run; ++i) {
    x = run_layer(layers_[static_cast<size_t>(i)], x);
    if (options.output_hidden_states) out.hidden_states.push_back(x);
  }
  out.last_hidden_state = backend_.layer_norm(x, final_layer_norm_);
  out.pooler_output = pool(out.last_hidden_state, ids);
  return out;
}

ClipTextOutput ClipTextEncoder::encode(std::span<const int> ids, int64_t batch, const ClipTextOptions& options) {
  OTTER_CHECK(batch > 0 && !ids.empty() && ids.size() % static_cast<size_t>(batch) == 0, "text encoder input: ",
              ids.size(), " token ids do not form ", batch, " sequences of equal length");
  Tensor t = Tensor::empty(Shape{batch, static_cast<int64_t>(ids.size()) / batch}, DType::I64);
  int64_t* p = t.data<int64_t>();
  for (size_t i = 0; i < ids.size(); ++i) p[i] = ids[i];
  return encode(t, options);
}

}  // namespace otter

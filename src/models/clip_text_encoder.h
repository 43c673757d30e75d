#pragma once
// The CLIP text encoder of Stable Diffusion 1.x / 2.x with the semantics of HF transformers'
// `CLIPTextModel`: token + position embeddings, pre-LayerNorm transformer layers with a causal
// mask, a final LayerNorm. The architecture comes from the model's text_encoder/config.json; the
// weights come through a TensorSource under their HF names (`text_model.embeddings.*`,
// `text_model.encoder.layers.{i}.*`, `text_model.final_layer_norm.*`), whatever the file layout.
//
// Clip skip (the AUTOMATIC1111 webui convention, "stop at last layers"):
//   clip_skip = k (1 <= k <= num_hidden_layers) returns final_layer_norm(hidden_states[-k]), where
//   hidden_states[0] is the embeddings output and hidden_states[i] the output of layer i, so
//   k = 1 is the normal output (the last layer) and k = 2 the penultimate layer's output.
//   diffusers' `clip_skip = d` argument (encode_prompt: final_layer_norm(hidden_states[-(d + 1)]))
//   is the same thing with k = d + 1; diffusers' default None is k = 1. Layers after the chosen one
//   are not run.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "models/weights.h"

namespace otter {

struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int64_t max_position_embeddings = 77;
  float layer_norm_eps = 1e-5f;
  Activation hidden_act = Activation::QuickGelu;
  // The token whose first occurrence gives the pooled output. Configs written by older
  // transformers carry the placeholder eos_token_id 2, for which HF pools at argmax(input_ids);
  // with the CLIP vocabulary the real EOS (49407) is the largest id, so that argmax is the first
  // 49407 and we use 49407 in that case.
  int64_t eos_token_id = 49407;

  // From an HF CLIPTextConfig JSON object. hidden_size, intermediate_size, num_hidden_layers and
  // num_attention_heads are required; the other keys default as in transformers' CLIPTextConfig.
  // `origin` (a file name) is used in error messages.
  static ClipTextConfig from_json(const nlohmann::json& config, const std::string& origin = "config");
  static ClipTextConfig from_file(const std::filesystem::path& config_json);
};

struct ClipTextOptions {
  int clip_skip = 1;                  // see the header comment; 1 = the last layer
  bool output_hidden_states = false;  // fill ClipTextOutput::hidden_states (costs one [B,N,C] per layer)
};

struct ClipTextOutput {
  // [B, N, C]: final_layer_norm of the chosen layer's output (the last one unless clip_skip > 1).
  Tensor last_hidden_state;
  // [B, C]: rows of last_hidden_state at each sequence's first eos_token_id (HF's pooler_output);
  // a sequence without that token pools at the position of its largest id (HF's legacy argmax).
  Tensor pooler_output;
  // Only with output_hidden_states: the embeddings output, then the output of each layer that was
  // run (no final LayerNorm), i.e. num_hidden_layers - clip_skip + 2 tensors of [B, N, C].
  std::vector<Tensor> hidden_states;
};

class ClipTextEncoder {
 public:
  // Reads every tensor the config needs from `source` (checking shapes) and fails if `source`
  // holds tensors the model does not use, except the `position_ids` buffer and the layers at or
  // beyond num_hidden_layers (a file may hold more layers than the config runs, as SD 2.x single
  // files do: 24 blocks, 23 used). `backend` must outlive the encoder.
  ClipTextEncoder(const ClipTextConfig& config, const TensorSource& source, Backend& backend);

  // ids: [B, N] (N <= max_position_embeddings) of I64 or I32, each in [0, vocab_size).
  ClipTextOutput encode(const Tensor& ids, const ClipTextOptions& options = {});
  // ids: `batch` sequences of equal length, row-major (e.g. the tokenizer's 77 ids per prompt).
  ClipTextOutput encode(std::span<const int> ids, int64_t batch, const ClipTextOptions& options = {});

  const ClipTextConfig& config() const { return config_; }
  // Number of parameters the model uses: embeddings, all layers it runs, the final LayerNorm
  // (buffers such as position_ids and ignored extra layers are not counted).
  int64_t parameter_count() const { return parameter_count_; }
  // Gives back what the backend prepared from this component's weights (packed, converted); the
  // next forward prepares them again. For a caller that is done with the component.
  void release_prepared_weights() { prepared_.release(); }
  const PreparedWeightsSet& prepared_weights() const { return prepared_; }
  // Layers present in the source beyond num_hidden_layers, not loaded (for the loader to report).
  int ignored_layers_in_source() const { return ignored_layers_; }

 private:
  struct Layer {
    NormWeights layer_norm1, layer_norm2;
    LinearWeights q_proj, k_proj, v_proj, out_proj;
    LinearWeights fc1, fc2;
  };

  // Token ids as a checked [B, N] table.
  struct Ids {
    int64_t batch = 0, length = 0;
    std::vector<int64_t> values;  // row-major
  };

  Ids read_ids(const Tensor& ids) const;
  Tensor get(Weights& weights, const std::string& name, const Shape& shape);  // counts parameters
  Layer load_layer(Weights& weights, int index);
  Tensor embed(const Ids& ids) const;
  Tensor run_layer(Layer& layer, const Tensor& x);
  Tensor pool(const Tensor& last_hidden_state, const Ids& ids) const;

  ClipTextConfig config_;
  Backend& backend_;
  Tensor token_embedding_;     // [vocab, C] as stored (any float dtype); rows converted on lookup
  Tensor position_embedding_;  // [max_positions, C] F32
  std::vector<Layer> layers_;
  NormWeights final_layer_norm_;
  int64_t parameter_count_ = 0;
  PreparedWeightsSet prepared_;
  int ignored_layers_ = 0;
};

}  // namespace otter

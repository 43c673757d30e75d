#include "pipeline/stable_diffusion.h"

#include <array>
#include <chrono>
#include <cstring>

#include "core/activity.h"
#include "core/error.h"
#include "core/stopwatch.h"
#include "models/unet_config.h"
#include "text/tokenizer_location.h"

namespace otter {
namespace {

// The pad token the model family uses (SD 1.x: <|endoftext|>, SD 2.x: "!" = id 0), from the
// model's special tokens (or its family's defaults, which open_model fills in).
int pad_id_for(const ModelFiles& files, const ClipTokenizer& tokenizer) {
  const nlohmann::json& special = files.configs.special_tokens;
  if (special.is_object() && special.contains("pad_token")) {
    const nlohmann::json& pad = special["pad_token"];
    const std::string token = pad.is_string() ? pad.get<std::string>()
                              : pad.is_object() && pad.contains("content") ? pad["content"].get<std::string>()
                                                                           : std::string();
    if (const auto id = tokenizer.token_id(token)) return *id;
  }
  return tokenizer.pad_id();
}

Tensor concat_tokens(const std::vector<Tensor>& parts) {
  // Concatenates [B, n_i, D] tensors along the token dimension.
  int64_t total = 0;
  for (const Tensor& p : parts) total += p.dim(1);
  const int64_t B = parts[0].dim(0), D = parts[0].dim(2);
  Tensor out = Tensor::empty(Shape{B, total, D}, DType::F32);
  for (int64_t b = 0; b < B; ++b) {
    int64_t at = 0;
    for (const Tensor& p_in : parts) {
      const Tensor p = p_in.contiguous();
      std::memcpy(out.f32() + (b * total + at) * D, p.f32() + b * p.dim(1) * D,
                  static_cast<size_t>(p.dim(1) * D) * sizeof(float));
      at += p.dim(1);
    }
  }
  return out;
}

}  // namespace

StableDiffusion::StableDiffusion(Backend& backend, ModelFiles files, ClipTokenizer tokenizer)
    : backend_(backend), files_(std::move(files)), tokenizer_(std::move(tokenizer)) {}

std::unique_ptr<StableDiffusion> StableDiffusion::load(const std::filesystem::path& path, Backend& backend,
                                                       const LoadOptions& options) {
  const auto start = SteadyClock::now();
  std::unique_ptr<StableDiffusion> sd = load(open_model(path, options.model), backend, options);
  sd->load_seconds_ = seconds_since(start);
  return sd;
}

std::unique_ptr<StableDiffusion> StableDiffusion::load(ModelFiles files, Backend& backend, const LoadOptions& options) {
  const auto start = SteadyClock::now();
  Activity activity(cat("loading the model ", files.name));
  if (!options.loras.empty()) {
    apply_loras(files, options.loras, options.lora_lenient, files.notes, options.lora_unmerged);
    for (const LoraSpec& l : options.loras)
      files.notes.push_back(cat("LoRA ", l.path.string(), options.lora_unmerged ? " applied unmerged" : " merged",
                                " at weight ", l.weight));
  }
  const TokenizerChoice tokenizer_choice = choose_tokenizer(files.configs.tokenizer_dir, options.tokenizer);
  ClipTokenizer tokenizer = load_tokenizer(tokenizer_choice);
  files.notes.push_back(cat("tokenizer: ", tokenizer_choice.describe()));

  std::unique_ptr<StableDiffusion> sd(new StableDiffusion(backend, std::move(files), std::move(tokenizer)));
  const ModelFiles& f = sd->files_;
  sd->pad_id_ = pad_id_for(f, sd->tokenizer_);
  sd->text_encoder_ = std::make_unique<ClipTextEncoder>(ClipTextConfig::from_json(f.configs.text_encoder, "text_encoder config"),
                                                        *f.text_encoder, backend);
  {
    Weights w(*f.unet);
    sd->unet_ = std::make_unique<UNet>(UNetConfig::from_json(f.configs.unet, "unet config"), w);
  }
  {
    Weights w(*f.vae);
    sd->vae_ = std::make_unique<Vae>(VaeConfig::from_json(f.configs.vae, "vae config"), w);
  }
  sd->scheduler_config_ = SchedulerConfig::from_json(f.configs.scheduler);
  sd->load_seconds_ = seconds_since(start);
  return sd;
}

Tensor StableDiffusion::encode_windows(const std::vector<ClipWindow>& windows, const TextEncodeOptions& options) {
  std::vector<int> ids;
  for (const ClipWindow& w : windows) ids.insert(ids.end(), w.begin(), w.end());
  ClipTextOptions te;
  te.clip_skip = options.clip_skip;
  // Each window is encoded as its own row; the rows are then laid side by side along the tokens.
  const Tensor states = text_encoder_->encode(ids, static_cast<int64_t>(windows.size()), te).last_hidden_state;
  const int64_t D = states.dim(2);
  return states.reshape(Shape{1, static_cast<int64_t>(windows.size()) * kClipContextLength, D});
}

Tensor StableDiffusion::encode_weighted(const std::vector<AttentionPiece>& pieces, const TextEncodeOptions& options) {
  // The webui's chunks: each piece's ids carry its weight; 75 ids per chunk, a BREAK closes one;
  // BOS, EOS and padding weigh 1.
  std::vector<ClipWindow> windows;
  std::vector<std::array<float, kClipContextLength>> weights;
  std::vector<int> ids;
  std::vector<float> id_weights;
  const auto close_chunk = [&] {
    ClipWindow w;
    w.fill(pad_id_);
    std::array<float, kClipContextLength> m;
    m.fill(1.0f);
    w[0] = tokenizer_.bos_id();
    for (size_t i = 0; i < ids.size(); ++i) {
      w[i + 1] = ids[i];
      m[i + 1] = id_weights[i];
    }
    w[ids.size() + 1] = tokenizer_.eos_id();
    windows.push_back(w);
    weights.push_back(m);
    ids.clear();
    id_weights.clear();
  };
  for (const AttentionPiece& piece : pieces) {
    if (piece.is_break) {
      close_chunk();
      continue;
    }
    // The webui's multipliers are a float32 tensor of the Python (double) weights.
    const auto weight = static_cast<float>(piece.weight);
    for (int id : tokenizer_.encode(piece.text)) {
      if (ids.size() == static_cast<size_t>(kClipMaxPromptTokens)) close_chunk();
      ids.push_back(id);
      id_weights.push_back(weight);
    }
  }
  if (!ids.empty() || windows.empty()) close_chunk();

  Tensor states = encode_windows(windows, options);  // [1, 77·chunks, D]
  const int64_t D = states.dim(2), per_chunk = kClipContextLength * D;
  float* z = states.f32();
  for (size_t c = 0; c < windows.size(); ++c) {
    float* chunk = z + static_cast<int64_t>(c) * per_chunk;
    // z.mean() before and after the weights, then z *= original / new (float32 scalars; the sums
    // in double, nearer the exact mean than any float32 summation order).
    double before = 0, after = 0;
    for (int64_t i = 0; i < per_chunk; ++i) before += chunk[i];
    for (int64_t t = 0; t < kClipContextLength; ++t)
      for (int64_t d = 0; d < D; ++d) {
        float& v = chunk[t * D + d];
        v = v * weights[c][static_cast<size_t>(t)];
        after += v;
      }
    const auto original_mean = static_cast<float>(before / static_cast<double>(per_chunk));
    const auto new_mean = static_cast<float>(after / static_cast<double>(per_chunk));
    const float ratio = original_mean / new_mean;
    for (int64_t i = 0; i < per_chunk; ++i) chunk[i] = chunk[i] * ratio;
  }
  return states;
}

Tensor StableDiffusion::encode_prompts(const std::vector<std::string>& prompts, const TextEncodeOptions& options) {
  TokenizeOptions tok;
  tok.long_prompt = options.long_prompt;
  tok.pad_id = pad_id_;
  std::vector<Tensor> rows;
  int64_t windows = 1;
  for (const std::string& p : prompts) {
    if (options.prompt_weighting) {
      const std::vector<AttentionPiece> pieces = parse_prompt_attention(p);
      rows.push_back(is_plain_attention(pieces) ? encode_windows(tokenizer_.tokenize(pieces[0].text, tok).windows, options)
                                                : encode_weighted(pieces, options));
    } else {
      rows.push_back(encode_windows(tokenizer_.tokenize(p, tok).windows, options));
    }
    windows = std::max(windows, rows.back().dim(1) / kClipContextLength);
  }
  for (Tensor& r : rows) r = pad_to_windows(r, windows, options);
  // Stack rows along the batch.
  const int64_t n = rows[0].dim(1), D = rows[0].dim(2);
  Tensor out = Tensor::empty(Shape{static_cast<int64_t>(rows.size()), n, D}, DType::F32);
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(out.f32() + static_cast<int64_t>(i) * n * D, rows[i].f32(), static_cast<size_t>(n * D) * sizeof(float));
  return out;
}

Tensor StableDiffusion::pad_to_windows(const Tensor& states, int64_t windows, const TextEncodeOptions& options) {
  const int64_t have = states.dim(1) / kClipContextLength;
  if (have >= windows) return states;
  TokenizeOptions tok;
  tok.pad_id = pad_id_;
  const Tensor empty = encode_windows(tokenizer_.tokenize("", tok).windows, options);
  std::vector<Tensor> parts{states};
  for (int64_t i = have; i < windows; ++i) {
    // One copy of the empty window per batch row.
    Tensor block = Tensor::empty(Shape{states.dim(0), kClipContextLength, states.dim(2)}, DType::F32);
    for (int64_t b = 0; b < states.dim(0); ++b)
      std::memcpy(block.f32() + b * empty.numel(), empty.f32(), empty.nbytes());
    parts.push_back(block);
  }
  return concat_tokens(parts);
}

}  // namespace otter

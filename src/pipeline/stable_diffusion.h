#pragma once
// A loaded Stable Diffusion model: tokenizer, text encoder, UNet, VAE and the model's own
// scheduler config, built from a checkpoint in either layout (src/io/model_files.h), running on
// one Backend. Text encoding lives here because it is per model (tokenizer padding, clip skip).
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/lora.h"
#include "io/model_files.h"
#include "models/clip_text_encoder.h"
#include "models/unet.h"
#include "models/vae.h"
#include "sampling/scheduler_config.h"
#include "text/clip_tokenizer.h"
#include "text/prompt_attention.h"

namespace otter {

struct LoadOptions {
  ModelOptions model;                                // --config, --prediction, --variant
  std::optional<std::filesystem::path> tokenizer;    // --tokenizer DIR
  std::vector<LoraSpec> loras;                       // --lora FILE[:WEIGHT], merged into the weights at load
  bool lora_lenient = false;                         // --lora-lenient: skip layers the model lacks, with a note
  bool lora_unmerged = false;                        // --lora-unmerged: layers add their updates at run time
};

struct TextEncodeOptions {
  LongPrompt long_prompt = LongPrompt::truncate;  // or chunk: 75-token windows, embeddings concatenated
  int clip_skip = 1;                              // 1 = last layer, 2 = penultimate, ...
  // The webui's emphasis syntax, (word:1.3) [word] BREAK (text/prompt_attention.h); off: the
  // prompt is plain text, brackets included.
  bool prompt_weighting = true;
};

class StableDiffusion {
 public:
  // Opens and checks the checkpoint and builds every component; `backend` must outlive the model.
  static std::unique_ptr<StableDiffusion> load(const std::filesystem::path& path, Backend& backend,
                                               const LoadOptions& options = {});
  // The same from a model already opened with open_model(path, options.model) (whose configs the
  // memory plan read before anything was built).
  static std::unique_ptr<StableDiffusion> load(ModelFiles files, Backend& backend, const LoadOptions& options = {});

  // Text states for each prompt: [prompts.size(), 77·windows, D]. When chunking, prompts with fewer
  // windows are padded with the empty prompt's windows so all rows have the same length.
  // A prompt with emphasis syntax is encoded as the webui does: 75-token chunks (a BREAK starts
  // one), each chunk's states multiplied per token by its weight, then scaled back to the chunk's
  // mean before weighting. A prompt without it (escapes aside) gives exactly the plain states.
  Tensor encode_prompts(const std::vector<std::string>& prompts, const TextEncodeOptions& options = {});
  // Pads the token dimension of a [B, 77·k, D] tensor to 77·windows with the empty prompt's states
  // (so cond and uncond rows can share one batch).
  Tensor pad_to_windows(const Tensor& states, int64_t windows, const TextEncodeOptions& options);

  Backend& backend() { return backend_; }
  const ModelFiles& files() const { return files_; }
  const ClipTokenizer& tokenizer() const { return tokenizer_; }
  ClipTextEncoder& text_encoder() { return *text_encoder_; }
  UNet& unet() { return *unet_; }
  Vae& vae() { return *vae_; }
  const SchedulerConfig& scheduler_config() const { return scheduler_config_; }
  double load_seconds() const { return load_seconds_; }

 private:
  StableDiffusion(Backend& backend, ModelFiles files, ClipTokenizer tokenizer);
  Tensor encode_windows(const std::vector<ClipWindow>& windows, const TextEncodeOptions& options);
  Tensor encode_weighted(const std::vector<AttentionPiece>& pieces, const TextEncodeOptions& options);

  Backend& backend_;
  ModelFiles files_;
  ClipTokenizer tokenizer_;
  int pad_id_ = 0;
  std::unique_ptr<ClipTextEncoder> text_encoder_;
  std::unique_ptr<UNet> unet_;
  std::unique_ptr<Vae> vae_;
  SchedulerConfig scheduler_config_;
  double load_seconds_ = 0;
};

}  // namespace otter

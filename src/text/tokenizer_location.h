#pragma once
// Where a model's CLIP tokenizer comes from. Single-file checkpoints carry no tokenizer, so otter
// has the CLIP BPE vocabulary built in (data/clip-tokenizer, the one SD 1.x, SD 2.x and SDXL share).
//
// Order, first that applies wins:
//   1. the model's own tokenizer/ folder (a diffusers folder, or a folder given with --config)
//      holding vocab.json and merges.txt: a model may change its vocabulary, so its own always
//      wins, and an ignored --tokenizer is reported on stderr;
//   2. --tokenizer DIR: an error if it lacks the files, rather than silently looking elsewhere;
//   3. the built-in vocabulary.
// The pad token is not part of this choice: it comes from the model's family (see
// StableDiffusion::load), since SD 1.x and SD 2.x pad the same vocabulary differently.
#include <filesystem>
#include <optional>
#include <string>

#include "text/clip_tokenizer.h"

namespace otter {

struct TokenizerChoice {
  std::optional<std::filesystem::path> dir;  // nullopt: the built-in vocabulary
  enum class Origin { model_folder, user_override, builtin } origin = Origin::builtin;

  // One line for logs and `otter info MODEL`, e.g. "built-in CLIP BPE vocabulary (49408 tokens, ...)".
  std::string describe() const;
};

TokenizerChoice choose_tokenizer(const std::optional<std::filesystem::path>& model_tokenizer_dir,
                                 const std::optional<std::filesystem::path>& user_override);

ClipTokenizer load_tokenizer(const TokenizerChoice& choice);

}  // namespace otter

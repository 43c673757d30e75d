#pragma once
// Where the CLIP tokenizer files come from. Single-file checkpoints carry no tokenizer, so the
// files (vocab.json + merges.txt of openai/clip-vit-large-patch14) may live outside the model.
//
// Search order, first folder holding both vocab.json and merges.txt wins:
//   1. <model_dir>/tokenizer            (a diffusers folder brings its own; it always wins, and an
//                                         ignored --tokenizer is reported on stderr)
//   2. user_override                    (--tokenizer DIR; an error if it lacks the files, rather
//                                         than silently looking elsewhere)
//   3. $XDG_DATA_HOME/otter/tokenizer, or ~/.local/share/otter/tokenizer when XDG_DATA_HOME is unset
//   4. <install prefix>/share/otter/tokenizer
// Otherwise an otter::Error lists the places searched, the files needed and where to put them.
#include <filesystem>
#include <optional>
#include <vector>

namespace otter {

std::filesystem::path find_tokenizer_dir(const std::optional<std::filesystem::path>& model_dir,
                                         const std::optional<std::filesystem::path>& user_override);

// Places 3 and 4 above, in order (for messages and tests).
std::vector<std::filesystem::path> default_tokenizer_dirs();

}  // namespace otter

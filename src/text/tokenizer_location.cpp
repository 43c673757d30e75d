#include "text/tokenizer_location.h"

#include <iostream>

#include "core/error.h"

namespace otter {

namespace {

bool has_tokenizer_files(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::is_regular_file(dir / "vocab.json", ec) &&
         std::filesystem::is_regular_file(dir / "merges.txt", ec);
}

}  // namespace

std::string TokenizerChoice::describe() const {
  switch (origin) {
    case Origin::model_folder:
      return cat(dir->string(), " (the model's own)");
    case Origin::user_override:
      return cat(dir->string(), " (from --tokenizer)");
    case Origin::builtin:
      break;
  }
  return "built-in CLIP BPE vocabulary (openai/clip-vit-large-patch14, 49408 tokens)";
}

TokenizerChoice choose_tokenizer(const std::optional<std::filesystem::path>& model_tokenizer_dir,
                                 const std::optional<std::filesystem::path>& user_override) {
  if (model_tokenizer_dir && has_tokenizer_files(*model_tokenizer_dir)) {
    std::error_code ec;
    if (user_override && std::filesystem::weakly_canonical(*user_override, ec) !=
                             std::filesystem::weakly_canonical(*model_tokenizer_dir, ec)) {
      std::cerr << "note: using the model's own tokenizer '" << model_tokenizer_dir->string() << "'; --tokenizer '"
                << user_override->string() << "' is ignored\n";
    }
    return {*model_tokenizer_dir, TokenizerChoice::Origin::model_folder};
  }
  if (user_override) {
    OTTER_CHECK(has_tokenizer_files(*user_override), "tokenizer folder '", user_override->string(),
                "' (from --tokenizer) must contain vocab.json and merges.txt; leave --tokenizer out to use the "
                "CLIP vocabulary built into otter");
    return {*user_override, TokenizerChoice::Origin::user_override};
  }
  return {std::nullopt, TokenizerChoice::Origin::builtin};
}

ClipTokenizer load_tokenizer(const TokenizerChoice& choice) {
  return choice.dir ? ClipTokenizer::load(*choice.dir) : ClipTokenizer::builtin();
}

}  // namespace otter

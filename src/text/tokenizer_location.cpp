#include "text/tokenizer_location.h"

#include <cstdlib>
#include <iostream>
#include <sstream>

#include "core/error.h"

namespace otter {

namespace {

bool has_tokenizer_files(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::is_regular_file(dir / "vocab.json", ec) &&
         std::filesystem::is_regular_file(dir / "merges.txt", ec);
}

std::optional<std::filesystem::path> env_path(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::filesystem::path(value);
}

}  // namespace

std::vector<std::filesystem::path> default_tokenizer_dirs() {
  std::vector<std::filesystem::path> dirs;
  if (const auto xdg = env_path("XDG_DATA_HOME")) {
    dirs.push_back(*xdg / "otter" / "tokenizer");
  } else if (const auto home = env_path("HOME")) {
    dirs.push_back(*home / ".local" / "share" / "otter" / "tokenizer");
  }
#ifdef OTTER_INSTALL_DATADIR
  dirs.push_back(std::filesystem::path(OTTER_INSTALL_DATADIR) / "tokenizer");
#endif
  return dirs;
}

std::filesystem::path find_tokenizer_dir(const std::optional<std::filesystem::path>& model_dir,
                                         const std::optional<std::filesystem::path>& user_override) {
  std::vector<std::filesystem::path> searched;
  if (model_dir) {
    const std::filesystem::path own = *model_dir / "tokenizer";
    if (has_tokenizer_files(own)) {
      std::error_code ec;
      if (user_override &&
          std::filesystem::weakly_canonical(*user_override, ec) != std::filesystem::weakly_canonical(own, ec)) {
        std::cerr << "note: using the model's own tokenizer '" << own.string() << "'; --tokenizer '"
                  << user_override->string() << "' is ignored\n";
      }
      return own;
    }
    searched.push_back(own);
  }
  if (user_override) {
    OTTER_CHECK(has_tokenizer_files(*user_override), "tokenizer folder '", user_override->string(),
                "' (from --tokenizer) must contain vocab.json and merges.txt (those of "
                "openai/clip-vit-large-patch14)");
    return *user_override;
  }
  for (const auto& dir : default_tokenizer_dirs()) {
    if (has_tokenizer_files(dir)) return dir;
    searched.push_back(dir);
  }
  std::ostringstream where;
  for (const auto& dir : searched) where << "\n  " << dir.string();
  const auto defaults = default_tokenizer_dirs();
  throw Error(cat("no CLIP tokenizer found; looked in:", where.str(),
                  "\nThe tokenizer is the files vocab.json and merges.txt of openai/clip-vit-large-patch14 "
                  "(the 'tokenizer' folder of any SD 1.x diffusers model). Put them in ",
                  defaults.empty() ? std::string("a folder") : "'" + defaults.front().string() + "'",
                  " or pass --tokenizer DIR."));
}

}  // namespace otter

#include <cctype>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "info.h"
#include "io/lora.h"
#include "io/checkpoint_format.h"

namespace otter::cli {

namespace {

bool has_extension(const std::filesystem::path& path, const std::string& ext) {
  std::string e = path.extension().string();
  for (char& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e == ext;
}

}  // namespace

// The one place that decides how a path is described; new kinds (model folders, PNG files)
// add a branch here and a describe_<kind>() in their own info_<kind>.cpp.
void describe_path(const std::filesystem::path& path, std::ostream& out, const ModelOptions& model,
                   const std::optional<std::filesystem::path>& tokenizer) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw Error(cat("no such file or folder '", path.string(), "'"));
  // Model folders, and pickle checkpoints (so the user learns why otter refuses them and how to convert).
  if (std::filesystem::is_directory(status) || has_pickle_extension(path)) {
    describe_model(path, model, out, tokenizer);
    return;
  }
  if (std::filesystem::is_regular_file(status) && has_extension(path, ".safetensors")) {
    refuse_pickle_checkpoint(path);  // a torch file renamed to .safetensors
    if (is_single_file_checkpoint(path)) describe_model(path, model, out, tokenizer);
    else if (is_lora_file(path)) out << describe_lora(read_lora(path));
    else describe_safetensors(path, out);
    return;
  }
  if (std::filesystem::is_regular_file(status) && has_extension(path, ".png")) {
    describe_png(path, out);
    return;
  }
  throw Error(cat("cannot describe '", path.string(),
                  "': otter info understands .safetensors files, diffusers model folders and PNG images"));
}

void add_info_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("info", "Describe a model (diffusers folder or single-file checkpoint: family, "
                                     "prediction type, components, parameters) or a .safetensors file");
  // Owned by the callback, which CLI11 keeps alive as long as the app.
  auto paths = std::make_shared<std::vector<std::string>>();
  auto model = std::make_shared<ModelOptions>();
  auto configs = std::make_shared<std::vector<std::string>>();
  auto prediction = std::make_shared<std::string>();
  auto tokenizer = std::make_shared<std::string>();
  cmd->add_option("paths", *paths, "Files or model folders to describe")->required();
  cmd->add_option("--config", *configs, "Model configs: a diffusers folder or config.json files (for single files "
                                        "that are not SD 1.5/2.1 architectures)");
  cmd->add_option("--prediction", *prediction, "Override the prediction type: eps or v");
  cmd->add_option("--variant", model->variant, "Prefer this diffusers weights variant, e.g. fp16");
  cmd->add_option("--tokenizer", *tokenizer, "Folder with a CLIP vocab.json and merges.txt (default: the model's "
                                             "own tokenizer/, else the vocabulary built into otter)");
  cmd->callback([paths, model, configs, prediction, tokenizer] {
    model->config.assign(configs->begin(), configs->end());
    if (!prediction->empty()) model->prediction = *prediction;
    for (size_t i = 0; i < paths->size(); ++i) {
      if (i > 0) std::cout << "\n";
      describe_path((*paths)[i], std::cout, *model,
                    tokenizer->empty() ? std::nullopt : std::optional<std::filesystem::path>(*tokenizer));
    }
    std::cout.flush();
  });
}

}  // namespace otter::cli

#include <cctype>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "info.h"

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
void describe_path(const std::filesystem::path& path, std::ostream& out) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw Error(cat("no such file or folder '", path.string(), "'"));
  if (std::filesystem::is_regular_file(status) && has_extension(path, ".safetensors")) {
    describe_safetensors(path, out);
    return;
  }
  throw Error(cat("cannot describe '", path.string(), "': otter info understands .safetensors files"));
}

void add_info_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("info", "Describe a .safetensors file: tensors, dtypes, parameter count, metadata");
  // Owned by the callback, which CLI11 keeps alive as long as the app.
  auto paths = std::make_shared<std::vector<std::string>>();
  cmd->add_option("paths", *paths, "Files to describe")->required();
  cmd->callback([paths] {
    for (size_t i = 0; i < paths->size(); ++i) {
      if (i > 0) std::cout << "\n";
      describe_path((*paths)[i], std::cout);
    }
    std::cout.flush();
  });
}

}  // namespace otter::cli

// The otter command line: subcommands are registered here and implemented in their own files.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"otter: Stable Diffusion text-to-image built around classifier-free guidance"};
  app.set_version_flag("--version", std::string("otter ") + OTTER_VERSION);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (app.get_subcommands().empty()) {
      std::fputs(app.help().c_str(), stdout);
    }
  } catch (const otter::Error& e) {
    std::fprintf(stderr, "otter: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

// The otter command line: subcommands are registered here and implemented in their own files.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "commands.h"
#include "core/activity.h"
#include "core/error.h"
#include "core/openmp_waits.h"

int main(int argc, char** argv) {
  otter::restart_with_short_openmp_spins(argv);  // see core/openmp_waits.h
  CLI::App app{"otter: Stable Diffusion text-to-image built around classifier-free guidance"};
  app.set_version_flag("--version", std::string("otter ") + OTTER_VERSION);
  app.require_subcommand(0, 1);
  otter::cli::add_generate_command(app);
  otter::cli::add_lab_command(app);
  otter::cli::add_serve_command(app);
  otter::cli::add_info_command(app);
  // The chosen subcommand's callback runs inside parse(), so its errors are caught here too.
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      std::fputs(app.help().c_str(), stdout);
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {  // otter::Error, and e.g. std::bad_alloc or filesystem errors
    // A sentence naming what was being done, never a bare type name like "std::bad_alloc".
    std::fprintf(stderr, "otter: error: %s\n", otter::describe_failure(e).c_str());
    return 1;
  }
  return 0;
}

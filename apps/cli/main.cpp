// The otter command line: subcommands are registered here and implemented in their own files.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "commands.h"
#include "core/activity.h"
#include "core/error.h"

// OpenMP threads that finish early spin at the next barrier by default. When other programs
// compete for the cores, the spinning steals the time the straggler needs: a run on a busy
// 2-core machine measured 30x slower. Waiting passively costs microseconds per parallel region,
// nothing at Stable Diffusion's op sizes. libgomp reads OMP_WAIT_POLICY when it is loaded, before
// main(), so set it and restart once; an explicit OMP_WAIT_POLICY from the user is kept.
static void prefer_passive_openmp_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then carry on with the default
}

int main(int argc, char** argv) {
  prefer_passive_openmp_waits(argv);
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

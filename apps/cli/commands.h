#pragma once
// The otter subcommands. Each lives in its own <name>_command.cpp and registers itself with
// add_<name>_command(app): it adds a CLI11 subcommand with its options and a callback that does
// the work. CLI11 runs the callback of the chosen subcommand inside app.parse(); an otter::Error
// thrown there is printed by main() as "otter: error: <message>" with exit status 1.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <string>

namespace otter::cli {

void add_info_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_lab_command(CLI::App& app);
void add_serve_command(CLI::App& app);

// --seed N, or -1 for a random one (the webui's convention): the seed to use, said in the log.
uint64_t resolve_seed(int64_t seed, bool quiet);

// A line of the commands' log on stderr, unless -q.
inline void log(bool quiet, const std::string& line) {
  if (!quiet) std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace otter::cli

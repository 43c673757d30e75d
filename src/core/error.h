#pragma once
// One exception type for every user-facing failure. Messages name the problem, the object
// (file, tensor, option) and, where there is one, the fix; the CLI prints them and exits non-zero.
#include <sstream>
#include <stdexcept>
#include <string>

namespace otter {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Builds a message from any streamable pieces: throw Error(cat("tensor '", name, "' ..."));
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

#define OTTER_CHECK(cond, ...)                                   \
  do {                                                           \
    if (!(cond)) throw ::otter::Error(::otter::cat(__VA_ARGS__)); \
  } while (0)

}  // namespace otter

#pragma once
// The shortest decimal text that reads back as exactly the same value (std::to_chars): for numbers
// written where they must reproduce a run (PNG parameters, guidance schedules and recipes).
#include <charconv>
#include <string>

namespace otter {

template <class T>
std::string shortest_text(T value) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, r.ptr);
}

}  // namespace otter

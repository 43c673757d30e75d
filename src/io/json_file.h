#pragma once
// Reading JSON written by Python tools. Python's json module writes the non-standard tokens
// NaN, Infinity and -Infinity (diffusers saves e.g. "lambda_min_clipped": -Infinity in scheduler
// configs), which strict parsers reject; these read them as the corresponding double values.
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace otter {

// Parses `text`; `origin` (a file name) goes into error messages.
nlohmann::json parse_python_json(std::string_view text, const std::string& origin);
// Reads and parses a file; `purpose` says in error messages what the file was needed for
// ("unet config", "scheduler config", ...).
nlohmann::json read_json_file(const std::filesystem::path& path, std::string_view purpose = "JSON file");

// A config key read as T, or `fallback` when the key is absent or null (diffusers' defaults);
// a value of the wrong type is an otter::Error naming `origin` and the key.
template <class T>
T config_value_or(const nlohmann::json& j, const char* key, T fallback, const std::string& origin) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(cat(origin, ": key '", key, "' has the wrong type (", it->dump(), ")"));
  }
}

}  // namespace otter

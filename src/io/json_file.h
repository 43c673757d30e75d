#pragma once
// Reading JSON written by Python tools. Python's json module writes the non-standard tokens
// NaN, Infinity and -Infinity (diffusers saves e.g. "lambda_min_clipped": -Infinity in scheduler
// configs), which strict parsers reject; these read them as the corresponding double values.
#include <filesystem>
#include <string>
#include <string_view>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace otter {

// Parses `text`; `origin` (a file name) goes into error messages.
nlohmann::json parse_python_json(std::string_view text, const std::string& origin);
// Reads and parses a file; `purpose` says in error messages what the file was needed for
// ("unet config", "scheduler config", ...).
nlohmann::json read_json_file(const std::filesystem::path& path, std::string_view purpose = "JSON file");

namespace detail {
template <class T>
struct is_integer_vector : std::false_type {};
template <class U, class A>
struct is_integer_vector<std::vector<U, A>> : std::bool_constant<std::is_integral_v<U> && !std::is_same_v<U, bool>> {};

// Whether nlohmann can convert `v` to the integer type I without undefined behaviour: it casts a
// floating-point value (NaN and Infinity included: Python's JSON has them) with static_cast.
template <class I>
bool convertible_to_integer(const nlohmann::json& v) {
  if (!v.is_number_float()) return true;  // an integer, or not a number (a type error follows)
  const double d = v.get<double>();
  return std::isfinite(d) && d == std::trunc(d) && d >= static_cast<double>(std::numeric_limits<I>::min()) &&
         d <= static_cast<double>(std::numeric_limits<I>::max());
}
}  // namespace detail

// A config key read as T, or `fallback` when the key is absent or null (diffusers' defaults);
// a value of the wrong type (or a float where an integer is wanted that is not one: NaN, 1e300,
// 2.5) is an otter::Error naming `origin` and the key.
template <class T>
T config_value_or(const nlohmann::json& j, const char* key, T fallback, const std::string& origin) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  bool integral = true;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    integral = detail::convertible_to_integer<T>(*it);
  } else if constexpr (detail::is_integer_vector<T>::value) {
    if (it->is_array())
      for (const auto& v : *it) integral = integral && detail::convertible_to_integer<typename T::value_type>(v);
  }
  if (!integral) throw Error(cat(origin, ": key '", key, "' must hold integers, got ", it->dump()));
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(cat(origin, ": key '", key, "' has the wrong type (", it->dump(), ")"));
  }
}

}  // namespace otter

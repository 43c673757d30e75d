#include "io/json_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace otter {
namespace {

constexpr std::string_view kMarker = "@otter-python-float@";

// Rewrites bare NaN / Infinity / -Infinity tokens (outside strings) as marked strings.
std::string quote_python_floats(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    bool replaced = false;
    for (std::string_view token : {std::string_view("-Infinity"), std::string_view("Infinity"), std::string_view("NaN")}) {
      if (text.substr(i, token.size()) == token) {
        out += '"';
        out += kMarker;
        out += token;
        out += '"';
        i += token.size() - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}

void restore_python_floats(nlohmann::json& j) {
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (s.rfind(kMarker, 0) != 0) return;
    const std::string_view token = std::string_view(s).substr(kMarker.size());
    if (token == "NaN") j = std::numeric_limits<double>::quiet_NaN();
    else if (token == "Infinity") j = std::numeric_limits<double>::infinity();
    else j = -std::numeric_limits<double>::infinity();
  } else if (j.is_structured()) {
    for (auto& item : j) restore_python_floats(item);
  }
}

}  // namespace

nlohmann::json parse_python_json(std::string_view text, const std::string& origin) {
  try {
    nlohmann::json j = nlohmann::json::parse(quote_python_floats(text));
    restore_python_floats(j);
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat("'", origin, "' is not valid JSON: ", e.what()));
  }
}

nlohmann::json read_json_file(const std::filesystem::path& path, std::string_view purpose) {
  std::ifstream in(path, std::ios::binary);
  OTTER_CHECK(in, "cannot read ", purpose, " '", path.string(), "': ", std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  try {
    return parse_python_json(buffer.str(), path.string());
  } catch (const Error& e) {
    throw Error(cat(purpose, ": ", e.what(), "; restore the file from the model's original download"));
  }
}

}  // namespace otter

#include "io/generation_parameters.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/number_text.h"

namespace otter {
namespace {

constexpr std::string_view kNegativePrefix = "Negative prompt:";
constexpr std::array<std::string_view, 6> kKnownKeys = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model"};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view strip(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// webui matches keys with Python's `\w[\w \-/]+`; every non-ASCII byte counts as a word
// character here (letters of other scripts), which is what \w does for them in practice.
bool is_word_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_';
}
bool is_key_char(char c) { return is_word_char(c) || c == ' ' || c == '-' || c == '/'; }

// ------------------------------------------------------------------------------------------
// Writing

// webui's quote(): values that would break the `Key: value, ...` line become JSON strings. Also
// quoted here: values webui's reader would change (empty, surrounding whitespace, a leading
// double quote, control characters); webui reads all of them back correctly.
bool needs_quotes(std::string_view value) {
  if (value.empty() || is_space(value.front()) || is_space(value.back()) || value.front() == '"') return true;
  for (char c : value) {
    if (c == ',' || c == ':' || static_cast<unsigned char>(c) < 0x20) return true;
  }
  return false;
}

std::string quote_if_needed(std::string_view key, std::string_view value) {
  if (!needs_quotes(value)) return std::string(value);
  try {
    return nlohmann::json(std::string(value)).dump();  // UTF-8 kept as is, like ensure_ascii=False
  } catch (const nlohmann::json::exception&) {
    throw Error(cat("generation parameters: the value of '", key, "' is not valid UTF-8"));
  }
}

void check_extra_key(const std::string& key) {
  bool ok = key.size() >= 2 && is_word_char(key.front());
  for (char c : key) ok = ok && is_key_char(c);
  OTTER_CHECK(ok, "generation parameters: '", key,
              "' cannot be a key: it must be at least 2 characters, start with a letter, digit or '_' and "
              "contain only letters, digits, '_', ' ', '-' and '/'");
  for (std::string_view known : kKnownKeys) {
    OTTER_CHECK(key != known, "generation parameters: '", key,
                "' is a field of GenerationParameters; set the field instead of adding it to extra");
  }
}

// ------------------------------------------------------------------------------------------
// Reading

struct KeyValue {
  std::string key;
  std::string value;
};

// The end of a JSON string starting at `open` (the index just past its closing quote), as
// webui's pattern `"(?:\\.|[^\\"])+"` matches it; npos if it does not.
size_t quoted_end(std::string_view line, size_t open) {
  size_t i = open + 1;
  while (i < line.size()) {
    if (line[i] == '\\') {
      if (i + 1 >= line.size()) return std::string_view::npos;
      i += 2;
    } else if (line[i] == '"') {
      return i == open + 1 ? std::string_view::npos : i + 1;  // at least one character inside
    } else {
      ++i;
    }
  }
  return std::string_view::npos;
}

// webui's unquote(): a value in double quotes is decoded as JSON if it is valid JSON.
std::string unquote(std::string_view value) {
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    const auto parsed = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_string()) return parsed.get<std::string>();
  }
  return std::string(value);
}

// All `Key: value` pairs of a line, with the semantics of webui's re.findall over
// `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`.
std::vector<KeyValue> scan_pairs(std::string_view line) {
  std::vector<KeyValue> pairs;
  size_t pos = 0;
  while (pos < line.size()) {
    size_t i = pos;
    while (i < line.size() && is_space(line[i])) ++i;
    const size_t key_begin = i;
    if (i >= line.size() || !is_word_char(line[i])) {
      pos = pos + 1;
      continue;
    }
    size_t key_end = i + 1;
    while (key_end < line.size() && is_key_char(line[key_end])) ++key_end;
    if (key_end - key_begin < 2 || key_end >= line.size() || line[key_end] != ':') {
      // Any match starting inside this run of key characters would end at the same place and
      // fail the same way: skip the run (keeps the scan linear).
      pos = std::max(pos + 1, key_end);
      continue;
    }
    size_t v = key_end + 1;
    while (v < line.size() && is_space(line[v])) ++v;
    size_t value_end = std::string_view::npos;
    if (v < line.size() && line[v] == '"') {
      const size_t q = quoted_end(line, v);
      if (q != std::string_view::npos && (q == line.size() || line[q] == ',')) value_end = q;
    }
    if (value_end == std::string_view::npos) {
      value_end = line.find(',', v);
      if (value_end == std::string_view::npos) value_end = line.size();
    }
    pairs.push_back({std::string(line.substr(key_begin, key_end - key_begin)),
                     unquote(line.substr(v, value_end - v))});
    pos = value_end < line.size() ? value_end + 1 : line.size();
  }
  return pairs;
}

template <class T>
T parse_number(const std::string& key, std::string_view text, std::string_view expected) {
  const std::string_view s = strip(text);
  T value{};
  const auto result = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || result.ec != std::errc() || result.ptr != s.data() + s.size()) {
    throw Error(cat("generation parameters: '", key, "' has the malformed value '", text, "' (expected ",
                    expected, ")"));
  }
  return value;
}

void set_field(GenerationParameters& p, const KeyValue& kv) {
  const std::string& key = kv.key;
  if (key == "Steps") {
    p.steps = parse_number<int>(key, kv.value, "a whole number of steps");
  } else if (key == "Sampler") {
    p.sampler = kv.value;
  } else if (key == "CFG scale") {
    const double cfg = parse_number<double>(key, kv.value, "a number");
    OTTER_CHECK(std::isfinite(cfg), "generation parameters: 'CFG scale' must be finite, got '", kv.value, "'");
    p.cfg_scale = cfg;
  } else if (key == "Seed") {
    p.seed = parse_number<uint64_t>(key, kv.value, "a non-negative whole number");
  } else if (key == "Size") {
    const std::string_view s = strip(kv.value);
    const size_t x = s.find('x');
    if (x == std::string_view::npos) {
      throw Error(cat("generation parameters: 'Size' has the malformed value '", kv.value,
                      "' (expected WIDTHxHEIGHT, e.g. 512x512)"));
    }
    p.width = parse_number<int>(key, s.substr(0, x), "WIDTHxHEIGHT, e.g. 512x512");
    p.height = parse_number<int>(key, s.substr(x + 1), "WIDTHxHEIGHT, e.g. 512x512");
  } else if (key == "Model") {
    p.model = kv.value;
  } else {
    p.extra.emplace_back(key, kv.value);
  }
}

}  // namespace

std::string format_parameters(const GenerationParameters& params) {
  std::vector<std::pair<std::string, std::string>> fields;
  if (params.steps) fields.emplace_back("Steps", std::to_string(*params.steps));
  if (!params.sampler.empty()) fields.emplace_back("Sampler", params.sampler);
  if (params.cfg_scale) fields.emplace_back("CFG scale", shortest_text(*params.cfg_scale));
  if (params.seed) fields.emplace_back("Seed", std::to_string(*params.seed));
  if (params.width && params.height) fields.emplace_back("Size", cat(*params.width, "x", *params.height));
  if (!params.model.empty()) fields.emplace_back("Model", params.model);
  for (const auto& [key, value] : params.extra) {
    check_extra_key(key);
    fields.emplace_back(key, value);
  }

  std::string line;
  for (const auto& [key, value] : fields) {
    if (!line.empty()) line += ", ";
    line += key + ": " + quote_if_needed(key, value);
  }
  std::string text = params.prompt;
  if (!params.negative_prompt.empty()) text += cat("\n", kNegativePrefix, " ", params.negative_prompt);
  if (!line.empty()) text += "\n" + line;
  return std::string(strip(text));  // as webui, which strips the whole text
}

GenerationParameters parse_parameters(std::string_view text) {
  std::vector<std::string_view> lines;
  const std::string_view all = strip(text);
  for (size_t begin = 0;;) {
    const size_t end = all.find('\n', begin);
    lines.push_back(all.substr(begin, end == std::string_view::npos ? std::string_view::npos : end - begin));
    if (end == std::string_view::npos) break;
    begin = end + 1;
  }

  GenerationParameters params;
  std::vector<KeyValue> pairs = scan_pairs(lines.back());
  if (pairs.size() >= 3) {
    lines.pop_back();
  } else {
    pairs.clear();  // webui's rule: too few pairs means the last line is still prompt text
  }

  bool in_negative = false;
  for (std::string_view raw : lines) {
    std::string_view line = strip(raw);
    if (line.starts_with(kNegativePrefix)) {
      in_negative = true;
      line = strip(line.substr(kNegativePrefix.size()));
    }
    std::string& target = in_negative ? params.negative_prompt : params.prompt;
    if (!target.empty()) target += '\n';
    target += line;
  }
  for (const KeyValue& kv : pairs) set_field(params, kv);
  return params;
}

}  // namespace otter

#include "guidance/guidance_recipe.h"

#include <map>

#include "core/error.h"

namespace otter {
namespace {

// Short names for diffusers' long parameter names.
const std::map<std::string, std::string>& aliases() {
  static const std::map<std::string, std::string> a{
      {"scale", "guidance_scale"},
      {"rescale", "guidance_rescale"},
      {"original", "use_original_formulation"},
      {"momentum", "adaptive_projected_guidance_momentum"},
      {"norm_threshold", "adaptive_projected_guidance_rescale"},
      {"norm_dim", "adaptive_projected_guidance_norm_dim"},
  };
  return a;
}

// Parameters whose values are words (transformer layer names, FDG's rescale space): these also take bare words and lists of
// them (layers=mid, pag_applied_layers=[mid,up.1]), which JSON would need quoted.
bool names_layers(const std::string& key) {
  return key == "layers" || key == "guidance_rescale_space" || key == "pag_applied_layers" || key == "perturbed_guidance_layers" || key == "skip_layer_guidance_layers" ||
         key == "seg_guidance_layers" || key == "auto_guidance_layers";
}

nlohmann::json parse_layer_value(const std::string& value) {
  try {
    return nlohmann::json::parse(value);
  } catch (const nlohmann::json::exception&) {  // not JSON (or a number beyond a double): read as names below
  }
  const auto one = [](const std::string& word) {
    try {
      return nlohmann::json::parse(word);
    } catch (const nlohmann::json::exception&) {
      return nlohmann::json(word);
    }
  };
  if (value.size() >= 2 && value.front() == '[' && value.back() == ']') {
    nlohmann::json list = nlohmann::json::array();
    std::string word;
    for (char ch : value.substr(1, value.size() - 2) + ",") {
      if (ch != ',') {
        word.push_back(ch);
        continue;
      }
      const size_t a = word.find_first_not_of(" \t"), b = word.find_last_not_of(" \t");
      if (a != std::string::npos) list.push_back(one(word.substr(a, b - a + 1)));
      word.clear();
    }
    return list;
  }
  return one(value);
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// Splits at `sep` outside [brackets].
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  int depth = 0;
  for (char ch : s) {
    if (ch == '[') ++depth;
    if (ch == ']') --depth;
    if (ch == sep && depth == 0) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(ch);
    }
  }
  parts.push_back(cur);
  return parts;
}

}  // namespace

GuidanceRecipe GuidanceRecipe::parse(const std::string& text) {
  const std::vector<std::string> sections = split(text, ';');
  const std::string& head = sections[0];
  const size_t colon = head.find(':');
  GuidanceRecipe r;
  r.method = trim(head.substr(0, colon));
  OTTER_CHECK(!r.method.empty(), "guidance recipe '", text, "' names no method; e.g. apg:scale=7.5,eta=0");
  r.params = nlohmann::json::object();
  if (colon != std::string::npos) {
    for (const std::string& item_raw : split(head.substr(colon + 1), ',')) {
      const std::string item = trim(item_raw);
      if (item.empty()) continue;
      const size_t eq = item.find('=');
      OTTER_CHECK(eq != std::string::npos, "guidance recipe '", text, "': '", item, "' is not NAME=VALUE");
      std::string key = trim(item.substr(0, eq));
      const std::string value = trim(item.substr(eq + 1));
      if (const auto it = aliases().find(key); it != aliases().end()) key = it->second;
      OTTER_CHECK(!r.params.contains(key), "guidance recipe '", text, "' gives ", key, " twice");
      if (names_layers(key)) {
        r.params[key] = parse_layer_value(value);
        continue;
      }
      try {
        r.params[key] = nlohmann::json::parse(value);
      } catch (const nlohmann::json::exception&) {  // a syntax error, or a number beyond a double (found by fuzzing)
        throw Error(cat("guidance recipe '", text, "': the value of ", key, " ('", value,
                        "') is not a number, true/false, null or a [list]"));
      }
    }
  }
  for (size_t i = 1; i < sections.size(); ++i) {
    const std::string modifier = trim(sections[i]);
    if (modifier.empty()) continue;
    const size_t eq = modifier.find('=');
    const std::string key = trim(modifier.substr(0, eq));
    OTTER_CHECK((key == "interval" || key == "adaptive") && eq != std::string::npos, "guidance recipe '", text,
                "': unknown modifier '", modifier, "'; the modifiers are interval=LO..HI (sigma) and adaptive=GAMMA");
    const std::string value = trim(modifier.substr(eq + 1));
    if (key == "adaptive") {
      OTTER_CHECK(!r.adaptive, "guidance recipe '", text, "' gives adaptive twice");
      try {
        size_t used = 0;
        r.adaptive = std::stod(value, &used);
        OTTER_CHECK(used == value.size(), "");
      } catch (const std::exception&) {
        throw Error(cat("guidance recipe '", text, "': adaptive must be a cosine threshold, e.g. adaptive=0.99; got '",
                        value, "'"));
      }
      continue;
    }
    OTTER_CHECK(!r.interval, "guidance recipe '", text, "' gives interval twice");
    const std::string& range = value;
    const size_t dots = range.find("..");
    try {
      OTTER_CHECK(dots != std::string::npos, "");
      size_t used_lo = 0, used_hi = 0;
      const std::string lo = range.substr(0, dots), hi = range.substr(dots + 2);
      r.interval = std::make_pair(std::stod(lo, &used_lo), std::stod(hi, &used_hi));
      OTTER_CHECK(used_lo == lo.size() && used_hi == hi.size(), "");
    } catch (const std::exception&) {
      throw Error(cat("guidance recipe '", text, "': interval must be LO..HI in sigma, e.g. interval=0.28..5.42; got '",
                      range, "'"));
    }
  }
  (void)r.make();  // unknown methods and parameters fail here, with the guider's own message
  return r;
}

std::unique_ptr<Guider> GuidanceRecipe::make() const {
  std::unique_ptr<Guider> g = make_guider(method, params);
  // Adaptive skipping inside the interval: outside it no step is guided anyway.
  if (adaptive) g = with_adaptive_skipping(std::move(g), *adaptive);
  if (interval) g = with_sigma_interval(std::move(g), interval->first, interval->second);
  return g;
}

std::string GuidanceRecipe::to_string() const {
  std::string out = method;
  bool first = true;
  for (auto it = params.begin(); it != params.end(); ++it) {  // nlohmann::json objects iterate sorted
    out += first ? ":" : ",";
    out += it.key() + "=" + it.value().dump();
    first = false;
  }
  if (interval) out += cat(";interval=", interval->first, "..", interval->second);
  if (adaptive) out += cat(";adaptive=", *adaptive);
  return out;
}

}  // namespace otter

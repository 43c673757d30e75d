#include "models/transformer_block_choice.h"

#include <algorithm>
#include <regex>

#include "core/error.h"

namespace otter {
namespace {

// down.I[.J]… / up.I[.J]… -> down_blocks.I[.attentions.J]…
std::string expand_short_form(const std::string& pattern) {
  static const std::regex short_form(R"(^(down|up)\.(\d+)(?:\.(\d+))?(.*)$)");
  std::smatch m;
  if (!std::regex_match(pattern, m, short_form)) return pattern;
  return cat(m[1].str(), "_blocks.", m[2].str(), m[3].matched ? ".attentions." + m[3].str() : std::string(), m[4].str());
}

std::string last_component(const std::string& s) {
  const size_t dot = s.rfind('.');
  return dot == std::string::npos ? s : s.substr(dot + 1);
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string listing(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += cat("\n  ", i, "  ", names[i], "  (", short_transformer_name(names[i]), ")");
  return out;
}

}  // namespace

std::string short_transformer_name(const std::string& block_name) {
  static const std::regex updown(R"(^(down|up)_blocks\.(\d+)\.attentions\.(\d+)\..*$)");
  std::smatch m;
  if (std::regex_match(block_name, m, updown)) return cat(m[1].str(), ".", m[2].str(), ".", m[3].str());
  if (block_name.rfind("mid_block.", 0) == 0) return "mid";
  return block_name;
}

std::vector<int> choose_transformer_blocks(const std::vector<std::string>& block_names, const nlohmann::json& layers) {
  const nlohmann::json entries = layers.is_array() ? layers : nlohmann::json::array({layers});
  OTTER_CHECK(!entries.empty(), "no transformer layers chosen; the UNet's are:", listing(block_names));
  std::vector<int> chosen;
  const auto add = [&](int b) {
    if (std::find(chosen.begin(), chosen.end(), b) == chosen.end()) chosen.push_back(b);
  };
  for (const nlohmann::json& e : entries) {
    if (e.is_number_integer()) {
      const int index = e.get<int>();
      OTTER_CHECK(index >= 0 && index < static_cast<int>(block_names.size()), "transformer layer ", index,
                  " does not exist; the UNet's are:", listing(block_names));
      add(index);
      continue;
    }
    OTTER_CHECK(e.is_string(), "a transformer layer is a name or an index, got ", e.dump());
    const std::string pattern = expand_short_form(e.get<std::string>());
    std::regex re;
    try {
      re = std::regex(pattern);
    } catch (const std::regex_error& err) {
      throw Error(cat("transformer layer '", e.get<std::string>(), "' is not a valid regular expression (", err.what(), ")"));
    }
    bool found = false;
    for (size_t b = 0; b < block_names.size(); ++b) {
      const std::string attn1 = block_names[b] + ".attn1";
      // diffusers' is_fake_integral_match: "blocks.1" must not pick ".11" by its last number.
      const bool fake = all_digits(last_component(pattern)) && all_digits(last_component(attn1)) &&
                        last_component(pattern) == last_component(attn1);
      if (std::regex_search(attn1, re) && !fake) {
        add(static_cast<int>(b));
        found = true;
      }
    }
    OTTER_CHECK(found, "transformer layer '", e.get<std::string>(), "' matches none of the UNet's; they are:",
                listing(block_names));
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace otter

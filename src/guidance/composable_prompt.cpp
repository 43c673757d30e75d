#include "guidance/composable_prompt.h"

#include <regex>

namespace otter {

std::vector<WeightedPrompt> split_composable_prompt(const std::string& prompt) {
  // The webui's re_AND = \bAND\b and re_weight = ^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$
  static const std::regex and_word(R"(\bAND\b)");
  static const std::regex weight(R"(^([\s\S]*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$)");
  std::vector<WeightedPrompt> parts;
  for (std::sregex_token_iterator it(prompt.begin(), prompt.end(), and_word, -1), end; it != end; ++it) {
    const std::string part = it->str();
    std::smatch m;
    WeightedPrompt w;
    if (std::regex_match(part, m, weight)) {
      w.text = m[1].str();
      if (m[2].matched) w.weight = std::stod(m[2].str());
    } else {
      w.text = part;
    }
    parts.push_back(std::move(w));
  }
  if (parts.empty()) parts.push_back({prompt, 1.0});
  return parts;
}

bool is_composable(const std::vector<WeightedPrompt>& parts) {
  return parts.size() > 1 || (parts.size() == 1 && parts[0].weight != 1.0);
}

}  // namespace otter

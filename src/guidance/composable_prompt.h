#pragma once
// Composable prompts (Liu et al. 2022, "Compositional Visual Generation with Composable Diffusion
// Models"), in the webui's syntax: a prompt is sub-prompts joined by the word AND, each with an
// optional weight after a colon,
//
//   "a red circle AND a blue square :0.6"   ->   {"a red circle", 1}, {"a blue square", 0.6}
//
// and guidance adds each sub-prompt's direction from the one unconditional prediction:
//   eps = u + Σ_k w_k·s·(c_k − u)
// (the webui's combine_denoised, accumulated in that order). A prompt without AND or weight is an
// ordinary prompt.
#include <string>
#include <vector>

namespace otter {

struct WeightedPrompt {
  std::string text;
  double weight = 1.0;
};

// Splits at "AND" as a whole word (case-sensitive, as the webui) and reads each part's trailing
// ":NUMBER" weight (default 1).
std::vector<WeightedPrompt> split_composable_prompt(const std::string& prompt);

// Whether the prompt needs composable guidance: several parts, or one part with a weight other than 1.
bool is_composable(const std::vector<WeightedPrompt>& parts);

}  // namespace otter

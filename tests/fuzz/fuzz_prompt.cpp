// libFuzzer: what a user types into a prompt or a guidance option: composable prompts (AND with
// weights), emphasis ((word:1.3), [word], BREAK), guider recipes, scale schedules, and the CLIP
// tokenizer (byte-level BPE over any UTF-8, or not UTF-8). Anything may come in; the only
// acceptable outcomes are a result or an otter::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "guidance/composable_prompt.h"
#include "guidance/guidance_recipe.h"
#include "guidance/guidance_schedule.h"
#include "text/clip_tokenizer.h"
#include "text/prompt_attention.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  static const otter::ClipTokenizer tokenizer = otter::ClipTokenizer::builtin();
  try {
    (void)otter::split_composable_prompt(text);
  } catch (const otter::Error&) {
  }
  try {
    const otter::GuidanceRecipe r = otter::GuidanceRecipe::parse(text);
    (void)r.make();
    (void)r.to_string();
  } catch (const otter::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  try {
    otter::GuidanceSchedule s = otter::GuidanceSchedule::parse(text);
    s.validate(20);
    (void)s.at(3, 20);
  } catch (const otter::Error&) {
  }
  try {
    for (const otter::AttentionPiece& piece : otter::parse_prompt_attention(text)) (void)tokenizer.encode(piece.text);
  } catch (const otter::Error&) {
  }
  try {
    (void)tokenizer.encode(text);
  } catch (const otter::Error&) {
  }
  return 0;
}

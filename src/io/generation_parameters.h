#pragma once
// The text AUTOMATIC1111's stable-diffusion-webui stores in a PNG's `parameters` chunk (and
// shows as "infotext"); many tools read and write it, so images from otter can be inspected,
// re-run or imported elsewhere:
//
//   a watercolor painting of an otter
//   on a river bank                                  <- the prompt: every line up to ...
//   Negative prompt: blurry, low quality             <- ... this one (omitted when empty)
//   Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15
//
// The last line is comma-separated `Key: value` pairs. A value containing a comma, a colon or a
// newline is written as a JSON string (webui's quote()); otter also quotes values starting with
// a double quote, which webui would otherwise misread.
//
// Limits inherent in the format (webui behaves the same): surrounding whitespace of each prompt
// line is not kept, a prompt line starting with "Negative prompt:" starts the negative prompt,
// and a last line with fewer than three `Key: value` pairs is read as part of the prompt.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace otter {

struct GenerationParameters {
  std::string prompt;
  std::string negative_prompt;        // "" = none (the line is omitted)
  std::optional<int> steps;           // "Steps"
  std::string sampler;                // "Sampler", webui names ("Euler a", "DPM++ 2M Karras"); "" = absent
  std::optional<double> cfg_scale;    // "CFG scale"
  std::optional<uint64_t> seed;       // "Seed"
  std::optional<int> width, height;   // "Size: WxH" (written only when both are set)
  std::string model;                  // "Model"; "" = absent
  // Every other key in order, e.g. {"CFG Rescale phi", "0.7"}, {"Schedule type", "Karras"}.
  std::vector<std::pair<std::string, std::string>> extra;

  bool operator==(const GenerationParameters&) const = default;
};

// Throws otter::Error for an extra key webui could not read back (it must be 2+ characters of
// letters, digits, '_', ' ', '-', '/', start with a letter, digit or '_', and not be one of the
// fields above), and for a value that needs JSON quoting but is not valid UTF-8.
std::string format_parameters(const GenerationParameters& params);

// Reads webui infotext (also ones written by webui itself, with keys otter does not know, which
// go to `extra`). Throws otter::Error naming the key when a known field has a malformed value
// (e.g. "Steps: twenty").
GenerationParameters parse_parameters(std::string_view text);

}  // namespace otter

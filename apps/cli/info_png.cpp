// `otter info IMAGE.png`: the image size and the generation parameters stored in it.
#include <ostream>

#include "info.h"
#include "io/generation_parameters.h"
#include "io/png.h"

namespace otter::cli {

void describe_png(const std::filesystem::path& path, std::ostream& out) {
  const PngImage image = read_png(path);
  out << path.string() << ": PNG " << image.width << "x" << image.height << ", " << image.channels << " channels\n";
  const auto parameters = image.find_text("parameters");
  if (!parameters) {
    out << "no generation parameters (no 'parameters' text chunk)\n";
  } else {
    const GenerationParameters p = parse_parameters(*parameters);
    out << "prompt:          " << p.prompt << "\n";
    if (!p.negative_prompt.empty()) out << "negative prompt: " << p.negative_prompt << "\n";
    if (p.steps) out << "steps:           " << *p.steps << "\n";
    if (!p.sampler.empty()) out << "sampler:         " << p.sampler << "\n";
    if (p.cfg_scale) out << "cfg scale:       " << *p.cfg_scale << "\n";
    if (p.seed) out << "seed:            " << *p.seed << "\n";
    if (p.width && p.height) out << "size:            " << *p.width << "x" << *p.height << "\n";
    if (!p.model.empty()) out << "model:           " << p.model << "\n";
    for (const auto& [key, value] : p.extra) out << key << ": " << value << "\n";
    out << "\nraw parameters chunk:\n" << *parameters << "\n";
  }
  for (const auto& [key, value] : image.text)
    if (key != "parameters") out << "text chunk '" << key << "': " << value << "\n";
}

}  // namespace otter::cli

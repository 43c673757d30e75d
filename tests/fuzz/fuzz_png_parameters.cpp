// libFuzzer: PNG files (decode) and the webui's `parameters` text they carry (parse, and format
// back). Anything may come in; the only acceptable outcomes are a result or an otter::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/generation_parameters.h"
#include "io/png.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const otter::PngImage png = otter::decode_png(data, size);
    if (const auto text = png.find_text("parameters")) (void)otter::parse_parameters(*text);
  } catch (const otter::Error&) {
  }
  try {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const otter::GenerationParameters p = otter::parse_parameters(text);
    try {
      (void)otter::format_parameters(p);
    } catch (const otter::Error&) {
    }
  } catch (const otter::Error&) {
  }
  return 0;
}

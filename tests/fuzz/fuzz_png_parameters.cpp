// libFuzzer: PNG files (decoded, and used as an init image or mask: normalised, binarised,
// resampled) and the webui's `parameters` text they carry (parsed, and formatted back). Anything
// may come in; the only acceptable outcomes are a result or an otter::Error.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/generation_parameters.h"
#include "io/png.h"
#include "pipeline/init_image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const otter::PngImage png = otter::decode_png(data, size);
    if (const auto text = png.find_text("parameters")) (void)otter::parse_parameters(*text);
    // As an init image or a mask (small ones only: resampling a huge picture is slow, not wrong).
    if (static_cast<int64_t>(png.width) * png.height <= 256 * 256) {
      (void)otter::picture_to_vae_input(png);
      (void)otter::mask_from_picture(png, true);
      (void)otter::resize_picture(png, std::max(1, png.width / 2 + 1), 8);
    }
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

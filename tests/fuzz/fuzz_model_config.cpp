// libFuzzer: model configs as diffusers writes them (Python's JSON, NaN and Infinity included):
// the UNet's, the VAE's, the text encoder's and the scheduler's. Anything may come in; the only
// acceptable outcomes are a config or an otter::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/json_file.h"
#include "models/clip_text_encoder.h"
#include "models/unet_config.h"
#include "models/vae.h"
#include "sampling/scheduler_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json j;
  try {
    j = otter::parse_python_json(text, "fuzz config");
  } catch (const otter::Error&) {
    return 0;
  }
  try {
    const otter::UNetConfig u = otter::UNetConfig::from_json(j);
    (void)u.transformer_block_names();
  } catch (const otter::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  try {
    (void)otter::VaeConfig::from_json(j);
  } catch (const otter::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  try {
    (void)otter::ClipTextConfig::from_json(j);
  } catch (const otter::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  try {
    (void)otter::SchedulerConfig::from_json(j);
  } catch (const otter::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}

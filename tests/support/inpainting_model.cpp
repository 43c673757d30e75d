#include "support/inpainting_model.h"

#include "io/ldm_key_map.h"
#include "io/safetensors.h"

namespace otter::testing {

namespace fs = std::filesystem;

namespace {
const fs::path kInpaintUnet = fs::path(OTTER_PROJECT_GOLDEN_DIR) / "tiny-sd1-inpaint";
}

fs::path inpainting_model_folder(const fs::path& shared, const fs::path& dir) {
  const fs::path folder = dir / "tiny-sd1-inpaint", tiny = shared / "models" / "tiny-sd1";
  fs::create_directories(folder);
  for (const char* part : {"text_encoder", "vae", "tokenizer", "scheduler", "model_index.json"})
    if (!fs::exists(folder / part)) fs::create_symlink(tiny / part, folder / part);
  if (!fs::exists(folder / "unet")) fs::create_directory_symlink(kInpaintUnet / "unet", folder / "unet");
  return folder;
}

fs::path inpainting_model_file(const fs::path& shared, const fs::path& dir) {
  fs::create_directories(dir);
  const SafetensorsFile base = SafetensorsFile::open(shared / "models" / "tiny-sd1.safetensors");
  const SafetensorsFile unet = SafetensorsFile::open(kInpaintUnet / "unet_original_layout.fp16.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& k : base.names())
    if (k.rfind(kLdmUnetPrefix, 0) != 0) tensors.emplace_back(k, base.tensor(k));
  for (const std::string& k : unet.names()) tensors.emplace_back(k, unet.tensor(k));
  const fs::path file = dir / "tiny-sd1-inpaint.safetensors";
  write_safetensors(file, tensors);
  return file;
}

std::vector<fs::path> inpainting_model_configs(const fs::path& shared) {
  const fs::path tiny = shared / "models" / "tiny-sd1";
  return {tiny / "text_encoder" / "config.json", kInpaintUnet / "unet" / "config.json", tiny / "vae" / "config.json",
          tiny / "scheduler" / "scheduler_config.json"};
}

}  // namespace otter::testing

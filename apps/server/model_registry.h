#pragma once
// The models a server offers, loaded once and shared by every request: the default model (-m, or
// the bundled one) and every model in --models DIR (a diffusers folder or a .safetensors single
// file per entry, named by the folder or the file's stem), each loaded on first use. At most
// --max-loaded stay loaded; the least recently used one that no request holds is dropped first.
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api_request.h"
#include "pipeline/latent_preview.h"
#include "pipeline/stable_diffusion.h"

namespace otter::serve {

struct LoadedModel {
  std::string name;
  std::unique_ptr<StableDiffusion> model;
  std::optional<LatentPreview> preview;  // the cheap latent->RGB map (none when the VAE has no encoder)
  int native_size = 512;                 // pixels: the UNet's sample_size x 8
};

struct ModelEntry {
  std::string name;
  std::filesystem::path path;
  bool loaded = false;
};

class ModelRegistry : public ModelCatalog {
 public:
  // `loras_dir`: LoRA files (.safetensors, named by stem) requests may name with <lora:NAME:W>.
  ModelRegistry(std::filesystem::path default_model, std::optional<std::filesystem::path> models_dir, int max_loaded,
                Backend& backend, std::mutex& device, std::optional<std::filesystem::path> loras_dir = std::nullopt);

  const std::string& default_name() const { return default_name_; }
  std::vector<ModelEntry> list() const;
  bool has(const std::string& name) const override;
  std::vector<std::string> names() const override;
  // The model, loading it (under `device`) when it is not loaded. Throws for an unknown name.
  // With LoRAs: the model with them applied unmerged, loaded and kept (and dropped) like a model
  // of its own; its weights come from the same mapped files.
  std::shared_ptr<LoadedModel> acquire(const std::string& name, const std::vector<LoraSpec>& loras = {});
  std::optional<std::filesystem::path> lora(const std::string& name) const override;
  std::vector<std::string> lora_names() const override;

 private:
  struct Slot {
    std::filesystem::path path;
    std::vector<LoraSpec> loras;  // a model with LoRAs: "name|lora:weight,…" in slots_
    std::shared_ptr<LoadedModel> loaded;
    std::chrono::steady_clock::time_point used;
  };
  void evict_unused();  // under mutex_

  Backend& backend_;
  std::mutex& device_;
  int max_loaded_;
  std::string default_name_;
  mutable std::mutex mutex_;
  std::map<std::string, Slot> slots_;
  std::map<std::string, std::filesystem::path> loras_;
};

}  // namespace otter::serve

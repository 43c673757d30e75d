#include "model_registry.h"

#include "core/error.h"

namespace otter::serve {
namespace {

std::string name_of(const std::filesystem::path& p) {
  return std::filesystem::is_directory(p) ? p.filename().string() : p.stem().string();
}

}  // namespace

ModelRegistry::ModelRegistry(std::filesystem::path default_model, std::optional<std::filesystem::path> models_dir,
                             int max_loaded, Backend& backend, std::mutex& device,
                             std::optional<std::filesystem::path> loras_dir)
    : backend_(backend), device_(device), max_loaded_(std::max(1, max_loaded)) {
  if (loras_dir) {
    std::error_code ec;
    OTTER_CHECK(std::filesystem::is_directory(*loras_dir, ec), "--loras ", loras_dir->string(),
                " is not a folder; give a folder holding LoRA .safetensors files");
    for (const auto& entry : std::filesystem::directory_iterator(*loras_dir))
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors")
        loras_[entry.path().stem().string()] = entry.path();
  }
  default_model = std::filesystem::absolute(default_model).lexically_normal();
  if (default_model.filename().empty()) default_model = default_model.parent_path();
  default_name_ = name_of(default_model);
  slots_[default_name_].path = default_model;
  if (models_dir) {
    std::error_code ec;
    OTTER_CHECK(std::filesystem::is_directory(*models_dir, ec), "--models ", models_dir->string(),
                " is not a folder; give a folder holding diffusers folders or .safetensors files");
    for (const auto& entry : std::filesystem::directory_iterator(*models_dir)) {
      const auto& p = entry.path();
      const bool folder = entry.is_directory() && std::filesystem::exists(p / "model_index.json");
      const bool file = entry.is_regular_file() && p.extension() == ".safetensors";
      if (!folder && !file) continue;
      const std::string name = name_of(p);
      if (!slots_.count(name)) slots_[name].path = p;
    }
  }
}

std::vector<ModelEntry> ModelRegistry::list() const {
  std::lock_guard lock(mutex_);
  std::vector<ModelEntry> out;
  for (const auto& [name, slot] : slots_)
    if (slot.loras.empty()) out.push_back({name, slot.path, slot.loaded != nullptr});
  return out;
}

std::vector<std::string> ModelRegistry::names() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, slot] : slots_)
    if (slot.loras.empty()) out.push_back(name);
  return out;
}

bool ModelRegistry::has(const std::string& name) const {
  std::lock_guard lock(mutex_);
  const auto it = slots_.find(name);
  return it != slots_.end() && it->second.loras.empty();
}

std::optional<std::filesystem::path> ModelRegistry::lora(const std::string& name) const {
  const auto it = loras_.find(name);
  return it == loras_.end() ? std::nullopt : std::optional<std::filesystem::path>(it->second);
}

std::vector<std::string> ModelRegistry::lora_names() const {
  std::vector<std::string> out;
  for (const auto& [name, path] : loras_) out.push_back(name);
  return out;
}

void ModelRegistry::evict_unused() {
  for (;;) {
    int loaded = 0;
    Slot* oldest = nullptr;
    for (auto& [name, slot] : slots_) {
      if (!slot.loaded) continue;
      ++loaded;
      if (slot.loaded.use_count() == 1 && (!oldest || slot.used < oldest->used)) oldest = &slot;
    }
    if (loaded < max_loaded_ || !oldest) return;
    oldest->loaded.reset();
  }
}

std::shared_ptr<LoadedModel> ModelRegistry::acquire(const std::string& name, const std::vector<LoraSpec>& loras) {
  std::unique_lock lock(mutex_);
  auto it = slots_.find(name);
  if (it == slots_.end() || !it->second.loras.empty()) {
    std::string known;
    for (const auto& [n, s] : slots_)
      if (s.loras.empty()) known += (known.empty() ? "" : ", ") + n;
    throw Error(cat("no model '", name, "'; this server has: ", known));
  }
  if (!loras.empty()) {
    const std::string key = name + "|" + describe_loras(loras);
    const std::filesystem::path path = it->second.path;
    it = slots_.try_emplace(key).first;
    it->second.path = path;
    it->second.loras = loras;
  }
  Slot& slot = it->second;
  slot.used = std::chrono::steady_clock::now();
  if (slot.loaded) return slot.loaded;
  evict_unused();
  // Loading builds the backend's prepared weights: one model computation at a time.
  auto loaded = std::make_shared<LoadedModel>();
  loaded->name = name;
  {
    std::lock_guard device(device_);
    LoadOptions options;
    options.loras = slot.loras;
    options.lora_unmerged = true;  // the base weights stay shared with the mapped files
    loaded->model = StableDiffusion::load(slot.path, backend_, options);
    loaded->preview = latent_preview_for(*loaded->model);
  }
  loaded->native_size = loaded->model->files().configs.unet.value("sample_size", 64) * 8;
  slot.loaded = loaded;
  return loaded;
}

}  // namespace otter::serve

#include "pipeline/latent_preview.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/stopwatch.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace otter {
namespace {

// Bump when the fit changes (pictures, sizes, method): every cached map is then refitted.
constexpr int kFitVersion = 1;
constexpr int kFitImages = 32, kHeldOutImages = 16;
constexpr uint64_t kFitSeed = 1, kHeldOutSeed = 2;
constexpr int kMaxFitSize = 128;
constexpr const char* kFormat = "otter latent-rgb map";

// The layers that make one VAE's latents another's: the encoder's last, the decoder's first and
// last, and the (post-)quant convolutions, where present.
const char* const kFingerprintTensors[] = {
    "quant_conv.weight",      "quant_conv.bias",         "post_quant_conv.weight", "post_quant_conv.bias",
    "encoder.conv_out.weight", "encoder.conv_out.bias",   "decoder.conv_in.weight", "decoder.conv_in.bias",
    "decoder.conv_out.weight", "decoder.conv_out.bias"};

struct Fnv {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  }
  void add(const std::string& s) { add(s.data(), s.size() + 1); }
};

std::filesystem::path user_cache_file(const std::string& fingerprint) {
  std::filesystem::path base;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) base = x;
  else if (const char* home = std::getenv("HOME"); home && *home) base = std::filesystem::path(home) / ".cache";
  else return {};
  return base / "otter" / "latent_rgb" / (fingerprint + ".json");
}

std::optional<LatentPreview> read_cached(const std::filesystem::path& file, const std::string& fingerprint) {
  std::error_code ec;
  if (file.empty() || !std::filesystem::is_regular_file(file, ec)) return std::nullopt;
  try {
    const nlohmann::json j = read_json_file(file, "latent->RGB preview map");
    if (j.value("format", "") != kFormat || j.value("vae_fingerprint", "") != fingerprint) return std::nullopt;
    LatentPreview p;
    p.map = LatentRgbMap::from_json(j.at("map"), file.string());
    const nlohmann::json& e = j.at("held_out");
    p.held_out = {e.at("mean_abs").get<double>(), e.at("p99_abs").get<double>(), e.at("images").get<int>(),
                  e.at("size").get<int>()};
    p.file = file;
    return p;
  } catch (const std::exception&) {
    return std::nullopt;  // unreadable or from another version: fitted again and rewritten
  }
}

bool write_cached(const std::filesystem::path& file, const std::string& fingerprint, const LatentPreview& p,
                  const std::string& model_name) {
  if (file.empty()) return false;
  const nlohmann::json j = {
      {"format", kFormat},
      {"about", "otter's cheap latent->RGB preview for this VAE: rgb = weights·latent + bias per latent pixel, "
                "fitted by least squares against the VAE's decodes; delete this file to fit it again"},
      {"model", model_name},
      {"vae_fingerprint", fingerprint},
      {"fit", {{"images", kFitImages}, {"seed", kFitSeed}, {"size", p.held_out.size}, {"version", kFitVersion}}},
      {"held_out",
       {{"images", p.held_out.images}, {"seed", kHeldOutSeed}, {"size", p.held_out.size},
        {"mean_abs", p.held_out.mean_abs}, {"p99_abs", p.held_out.p99_abs}}},
      {"map", p.map.to_json()}};
  try {
    std::filesystem::create_directories(file.parent_path());
    AtomicFileWriter w(file);
    w.write(j.dump(1) + "\n");
    w.commit();
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

std::string vae_fingerprint(const TensorSource& vae) {
  Fnv f;
  f.add("fit version " + std::to_string(kFitVersion));
  for (const char* name : kFingerprintTensors) {
    if (!vae.has(name)) continue;
    const Tensor t = vae.get(name).contiguous();
    f.add(std::string(name));
    f.add(std::string(dtype_name(t.dtype())));
    f.add(t.shape().str());
    f.add(t.raw(), t.nbytes());
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(f.h));
  return hex;
}

std::filesystem::path latent_preview_file(const ModelFiles& files) {
  if (files.layout == CheckpointLayout::DiffusersFolder) return files.path / "vae" / "otter_latent_rgb.json";
  return files.path.parent_path() / (files.path.filename().string() + ".otter_latent_rgb.json");
}

LatentPreview fit_latent_preview(StableDiffusion& model) {
  const auto t0 = SteadyClock::now();
  const int native = model.files().configs.unet.value("sample_size", 64) * model.vae().config().downscale_factor();
  const int size = std::min(native, kMaxFitSize);
  LatentPreview p;
  p.map = fit_latent_rgb_map(model.backend(), model.vae(), latent_rgb_fit_images(kFitImages, size, kFitSeed));
  p.held_out = latent_rgb_error(model.backend(), model.vae(), p.map, latent_rgb_fit_images(kHeldOutImages, size, kHeldOutSeed));
  p.fitted_now = true;
  p.fit_seconds = seconds_since(t0);
  return p;
}

std::optional<LatentPreview> latent_preview_for(StableDiffusion& model, const std::function<void(const std::string&)>& log) {
  if (!model.vae().has_encoder()) {
    if (log) log("the VAE has no encoder, so no latent->RGB preview map can be fitted: previews come from the VAE only");
    return std::nullopt;
  }
  const std::string fingerprint = vae_fingerprint(*model.files().vae);
  const std::filesystem::path beside = latent_preview_file(model.files()), user = user_cache_file(fingerprint);
  for (const auto& file : {beside, user})
    if (auto cached = read_cached(file, fingerprint)) return cached;
  LatentPreview p = fit_latent_preview(model);
  if (write_cached(beside, fingerprint, p, model.files().name)) p.file = beside;
  else if (write_cached(user, fingerprint, p, model.files().name)) p.file = user;
  if (log) {
    std::ostringstream s;
    s.precision(3);
    s << "fitted the latent->RGB preview map for this VAE in " << p.fit_seconds << " s (mean error " << p.held_out.mean_abs
      << " levels of 255 on held-out pictures); "
      << (p.file.empty() ? std::string("could not cache it") : "cached in " + p.file.string());
    log(s.str());
  }
  return p;
}

}  // namespace otter

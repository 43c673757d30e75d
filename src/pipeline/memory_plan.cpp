#include "pipeline/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>

#include "core/error.h"
#include "core/system_memory.h"
#include "io/component_tensors.h"
#include "models/vae_tiling.h"
#include "text/clip_tokenizer.h"

namespace otter {
namespace {

// Working memory the libraries take once ops run (oneDNN's primitive cache and JIT code, the
// OpenMP pool's stacks, the tokenizer's tables): measured on the bundled model at 64x64, where
// weights and activations are a few MB (README, *Memory*).
constexpr double kRuntimeBytes = 12e6;
// The same when otter's 16-bit kernels run the convolutions and linear layers (f16; bf16 on AVX-512
// BF16): oneDNN's primitives are never built. Measured on the bundled model at 64x64, bf16: peak
// RSS 0.037 GB on the 16-bit kernels against 0.044 GB with OTTER_BF16_ONEDNN=1 (Zen 5).
constexpr double kRuntimeBytes16 = 5e6;
constexpr int kVaeTile = 64;  // latent pixels per tile side (VaeTiling{} in vae_tiling.h)

// Bytes the weights of `specs` hold once the backend has prepared them: convolution and linear
// weights are copied into the compute layout (f32: 4 bytes a parameter; bf16 and f16: 2) and
// their file pages released; biases and norm parameters are used as f32. The token embedding
// stays in the mapped file (only the looked-up rows are read).
double prepared_weight_bytes(const std::vector<TensorSpec>& specs, Precision precision,
                             const std::function<bool(const std::string&)>& used = {}) {
  double bytes = 0;
  for (const TensorSpec& s : specs) {
    if (used && !used(s.name)) continue;
    if (s.name.find("token_embedding") != std::string::npos) continue;
    const double n = static_cast<double>(s.shape.numel());
    const bool matrix = s.shape.rank() == 4 || (s.shape.rank() == 2 && s.name.find("embedding") == std::string::npos);
    bytes += n * (matrix && precision != Precision::F32 ? 2.0 : 4.0);
  }
  return bytes;
}

}  // namespace

MemoryPlan plan_memory(const ModelConfigs& configs, const MemoryPlanRequest& r) {
  MemoryPlan plan;
  plan.request = r;
  plan.base = r.base_bytes;
  plan.runtime = cpu_uses_16bit_kernels(r.precision) ? kRuntimeBytes16 : kRuntimeBytes;
  const auto vae_channels = configs.vae.value("block_out_channels", std::vector<int>{64});
  const int factor = 1 << (vae_channels.size() - 1);
  const int64_t h = r.height / factor, w = r.width / factor;
  plan.latent_height = h;
  plan.latent_width = w;

  plan.text_weights = prepared_weight_bytes(text_encoder_tensor_specs(configs.text_encoder), r.precision);
  plan.unet_weights = prepared_weight_bytes(unet_tensor_specs(configs.unet), r.precision);
  // txt2img decodes only: the encoder's tensors stay unread in the mapped file. Image to image
  // prepares them too.
  plan.vae_weights = prepared_weight_bytes(vae_tensor_specs(configs.vae), r.precision, [&](const std::string& name) {
    return r.encodes_image || name.rfind("decoder.", 0) == 0 || name.rfind("post_quant_conv.", 0) == 0;
  });
  if (r.encodes_image)
    plan.vae_encode = vae_encode_activation_bytes(configs.vae, 1, r.height, r.width, r.precision, r.threads);

  // Prompts are encoded one at a time (each as its windows); the UNet sees all rows at once.
  plan.text = text_encoder_activation_bytes(configs.text_encoder, r.text_windows, r.precision, r.threads);
  plan.unet = unet_activation_bytes(configs.unet, r.images * r.unet_rows_per_image, h, w,
                                    kClipContextLength * r.text_windows, r.precision, r.threads);
  plan.vae_tiled = r.vae_tiling.value_or(estimated_decode_bytes(VaeConfig::from_json(configs.vae), r.images, h, w) >
                                         r.vae_memory_limit_gb * 1e9);
  if (plan.vae_tiled) {
    // One tile of every image at a time, plus the f32 sum of the whole images and its weights.
    plan.vae = vae_decode_activation_bytes(configs.vae, r.images, std::min<int64_t>(h, kVaeTile),
                                           std::min<int64_t>(w, kVaeTile), r.precision, r.threads);
    plan.vae.allocator += 4.0 * static_cast<double>(r.images * 3 * r.width * r.height) +
                          4.0 * static_cast<double>(r.width) * r.height;
  } else {
    plan.vae = vae_decode_activation_bytes(configs.vae, r.images, h, w, r.precision, r.threads);
  }
  // The turn's 8-bit images beside the decoder output.
  plan.vae.allocator += static_cast<double>(r.images * 3 * r.width * r.height);
  // Every image's 8-bit pixels and its initial and final latents stay until the run ends; a turn
  // holds its cond and uncond text rows.
  const auto latent_channels = configs.unet.value("in_channels", 4);
  const double all = static_cast<double>(r.total_images > 0 ? r.total_images : r.images);
  const double text_dim = configs.text_encoder.value("hidden_size", 768);
  plan.outputs = all * (3.0 * r.width * r.height + 2.0 * 4.0 * latent_channels * static_cast<double>(h * w)) +
                 2.0 * 4.0 * static_cast<double>(r.images) * kClipContextLength * r.text_windows * text_dim;
  return plan;
}

std::string MemoryPlan::describe() const {
  std::ostringstream out;
  const char* phase = encode_phase() > std::max(unet_phase(), decode_phase()) ? "VAE encode"
                      : unet_phase() >= decode_phase()                        ? "UNet"
                                                                              : "VAE decode";
  out << format_gb(peak()) << " at the " << phase << "'s peak: weights " << format_gb(weights()) << " (UNet "
      << format_gb(unet_weights) << ", text encoder " << format_gb(text_weights)
      << (request.encodes_image ? ", VAE " : ", VAE decoder ") << format_gb(vae_weights) << "), UNet activations "
      << format_gb(unet.total()) << " (" << request.images * request.unet_rows_per_image << " rows of "
      << latent_width << "x" << latent_height << " latents), VAE decode "
      << format_gb(vae.total()) << " (" << request.images << (request.images == 1 ? " image" : " images") << " at "
      << request.width << "x" << request.height << (vae_tiled ? ", tiled" : "") << "), process before loading "
      << format_gb(base) << ", libraries " << format_gb(runtime);
  if (request.encodes_image) out << ", VAE encode " << format_gb(vae_encode.total()) << " (the init picture)";
  if (text_released())
    out << "; the text encoder's weights are given back after the encoding"
        << (unet_released_for_decode() ? ", the UNet's before the decode" : "");
  return out.str();
}

MemoryBudget memory_budget(std::optional<double> limit_gb) {
  if (limit_gb) return {*limit_gb * 1e9, cat("--memory-limit ", *limit_gb, " GB")};
  const SystemMemory s = system_memory();
  if (!s.available_to_process) return {std::nullopt, s.describe()};
  const double margin = std::max(0.05 * *s.available_to_process, 256e6);
  return {*s.available_to_process - margin,
          cat(s.describe(), ", plus this process's ", format_gb(process_memory().resident_bytes), ", minus a ",
              format_gb(margin), " margin")};
}

MemoryDecision fit_memory(const ModelConfigs& configs, MemoryPlanRequest request, int64_t total_images,
                          std::optional<int64_t> max_batch, const MemoryBudget& budget) {
  const int64_t first = std::max<int64_t>(1, std::min(total_images, max_batch.value_or(total_images)));
  request.images = first;
  MemoryDecision d{plan_memory(configs, request), first, false};
  if (!budget.bytes || d.plan.peak() <= *budget.bytes) return d;

  // Too much at once: the images can run in turns when fewer at a time fit (the user's
  // --max-batch is a maximum, so a smaller turn is still within it).
  // The peak grows with the images, so bisect: lo fits (0: none tried yet), hi does not.
  int64_t lo = 0, hi = first;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    request.images = mid;
    (plan_memory(configs, request).peak() <= *budget.bytes ? lo : hi) = mid;
  }
  if (lo > 0) {
    request.images = lo;
    return {plan_memory(configs, request), lo, true};
  }

  // Not even one image fits: say what would.
  request.images = 1;
  const MemoryPlan one = plan_memory(configs, request);
  std::vector<std::string> fits;
  const auto try_variant = [&](const std::string& what, MemoryPlanRequest variant) {
    const MemoryPlan p = plan_memory(configs, variant);
    if (p.peak() <= *budget.bytes) fits.push_back(cat(what, " (", format_gb(p.peak()), ")"));
  };
  if (!one.vae_tiled) {
    MemoryPlanRequest v = request;
    v.vae_tiling = true;
    try_variant("--vae-tile", v);
  }
  if (request.unet_rows_per_image > 1) {
    MemoryPlanRequest v = request;
    v.unet_rows_per_image = 1;
    try_variant("--cfg-batch split", v);
    v.vae_tiling = true;
    if (!one.vae_tiled) try_variant("--cfg-batch split --vae-tile", v);
  }
  // The largest size of the same aspect, in steps of 64 pixels, with tiling as it would be chosen.
  for (int scale = 64; scale >= 1; --scale) {
    MemoryPlanRequest v = request;
    const double f = scale / 64.0;
    v.width = std::max(64, static_cast<int>(request.width * f) / 64 * 64);
    v.height = std::max(64, static_cast<int>(request.height * f) / 64 * 64);
    if (v.width >= request.width && v.height >= request.height) continue;
    if (plan_memory(configs, v).peak() <= *budget.bytes) {
      try_variant(cat("-W ", v.width, " -H ", v.height), v);
      break;
    }
  }
  std::ostringstream message;
  message << "not enough memory for this run: it needs an estimated " << one.describe() << (total_images > 1 ? cat(" for one image of ", total_images) : std::string())
          << "; available: " << format_gb(*budget.bytes) << " (" << budget.source << "). ";
  if (fits.empty()) {
    message << "Nothing smaller of this kind fits either: free memory, or give more with --memory-limit GB if you know "
               "better.";
  } else {
    message << "What would fit: ";
    for (size_t i = 0; i < fits.size(); ++i) message << (i ? "; " : "") << fits[i];
    message << ".";
  }
  throw Error(message.str());
}

}  // namespace otter

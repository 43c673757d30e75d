#include "pipeline/txt2img.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "models/vae_tiling.h"
#include "sampling/torch_cpu_generator.h"

namespace otter {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Repeats each row of x[P, ...] `times` times: [p0, p0, p1, p1, ...] (diffusers' repeat per prompt).
Tensor repeat_rows(const Tensor& x_in, int times) {
  const Tensor x = x_in.contiguous();
  std::vector<int64_t> shape = x.shape().to_vector();
  shape[0] *= times;
  Tensor out = Tensor::empty(Shape(shape), x.dtype());
  const size_t row = x.nbytes() / static_cast<size_t>(x.dim(0));
  for (int64_t r = 0; r < x.dim(0); ++r)
    for (int t = 0; t < times; ++t)
      std::memcpy(static_cast<char*>(out.raw()) + (r * times + t) * row, static_cast<const char*>(x.raw()) + r * row, row);
  return out;
}

void check_request(const Txt2ImgRequest& r, int latent_divisor) {
  OTTER_CHECK(!r.prompts.empty(), "no prompt given");
  OTTER_CHECK(r.images_per_prompt >= 1, "--images must be at least 1, got ", r.images_per_prompt);
  OTTER_CHECK(r.steps >= 1, "--steps must be at least 1, got ", r.steps);
  OTTER_CHECK(r.width > 0 && r.height > 0 && r.width % 8 == 0 && r.height % 8 == 0, "image size ", r.width, "x",
              r.height, " is not a multiple of 8 in both dimensions; try -W ", std::max(8, (r.width + 4) / 8 * 8), " -H ",
              std::max(8, (r.height + 4) / 8 * 8));
  OTTER_CHECK((r.width / 8) % latent_divisor == 0 && (r.height / 8) % latent_divisor == 0, "image size ", r.width, "x",
              r.height, ": this UNet needs width and height to be multiples of ", 8 * latent_divisor);
  OTTER_CHECK(r.negative_prompts.size() <= 1 || r.negative_prompts.size() == r.prompts.size(), "got ",
              r.negative_prompts.size(), " negative prompts for ", r.prompts.size(),
              " prompts: give one negative prompt for all, or one per prompt");
}

}  // namespace

std::string default_sampler_for(const SchedulerConfig& config) {
  if (config.class_name == "DPMSolverMultistepScheduler") return config.use_karras_sigmas ? "dpmpp_2m_karras" : "dpmpp_2m";
  for (std::string_view name : sampler_names())
    if (diffusers_class_of(name) == config.class_name) return std::string(name);
  throw Error(cat("the model's scheduler '", config.class_name, "' is not one otter implements; pick one with --sampler"));
}

Tensor to_uint8_image(const Tensor& decoded_in) {
  const Tensor d = decoded_in.contiguous();
  const int64_t B = d.dim(0), C = d.dim(1), H = d.dim(2), W = d.dim(3);
  Tensor out = Tensor::empty(Shape{B, H, W, C}, DType::U8);
  uint8_t* px = out.data<uint8_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H * W; ++i) {
        // diffusers: (x / 2 + 0.5).clamp(0, 1), then numpy (x * 255).round() on float32.
        float v = d.f32()[(b * C + c) * H * W + i] / 2.0f + 0.5f;
        v = std::fmin(std::fmax(v, 0.0f), 1.0f);
        px[(b * H * W + i) * C + c] = static_cast<uint8_t>(std::nearbyint(v * 255.0f));
      }
  return out;
}

Txt2ImgResult txt2img(StableDiffusion& model, const Txt2ImgRequest& request, const StepCallback& progress,
                      const Txt2ImgTrace& trace) {
  check_request(request, model.unet().config().spatial_divisor());
  Backend& be = model.backend();
  Txt2ImgResult result;

  const SchedulerConfig& scheduler = request.scheduler_config ? *request.scheduler_config : model.scheduler_config();
  result.sampler = request.sampler.empty() ? default_sampler_for(scheduler) : request.sampler;
  std::unique_ptr<Sampler> sampler = make_sampler(result.sampler, scheduler, request.sampler_options);
  sampler->set_timesteps(request.steps);
  request.guidance.schedule.validate(request.steps);

  // Text: cond rows per prompt; uncond from the negative prompt(s), "" by default. Both padded to
  // the same number of 77-token windows so they can share one batch.
  auto t0 = Clock::now();
  Tensor cond = model.encode_prompts(request.prompts, request.text);
  std::vector<std::string> negatives = request.negative_prompts;
  if (negatives.empty()) negatives.assign(1, "");
  bool any_guided = false;
  for (int s = 0; s < request.steps; ++s) any_guided |= request.guidance.schedule.at(s, request.steps) != 1.0f;
  Tensor uncond;
  if (any_guided) {
    // The same negative for every prompt is encoded once.
    Tensor neg = model.encode_prompts(negatives, request.text);
    if (neg.dim(0) == 1 && cond.dim(0) > 1) neg = repeat_rows(neg, static_cast<int>(cond.dim(0)));
    const int64_t windows = std::max(cond.dim(1), neg.dim(1)) / kClipContextLength;
    cond = model.pad_to_windows(cond, windows, request.text);
    uncond = model.pad_to_windows(neg, windows, request.text);
    uncond = repeat_rows(uncond, request.images_per_prompt);
  }
  cond = repeat_rows(cond, request.images_per_prompt);
  if (!uncond.defined()) uncond = cond;  // never evaluated: every step has scale 1
  result.seconds_text = since(t0);

  // Noise: one torch-compatible draw for the whole batch, as diffusers does.
  const int64_t B = cond.dim(0), h = request.height / 8, w = request.width / 8;
  const int64_t latent_channels = model.unet().config().in_channels;
  TorchCpuGenerator rng(request.seed);
  result.init_noise = Tensor::empty(Shape{B, latent_channels, h, w}, DType::F32);
  rng.randn(result.init_noise.f32(), static_cast<size_t>(result.init_noise.numel()));
  Tensor latents = Tensor::empty(result.init_noise.shape(), DType::F32);
  const float sigma0 = sampler->init_noise_sigma();
  for (int64_t i = 0; i < latents.numel(); ++i) latents.f32()[i] = result.init_noise.f32()[i] * sigma0;

  ClassifierFreeGuidance guidance(uncond, cond, request.guidance);
  const Denoiser unet = [&](const Tensor& x, float t, const Tensor& context) {
    return model.unet().forward(be, x, t, context);
  };

  // Samplers with several evaluations per step (Heun) repeat the step's timestep; the guidance
  // schedule is indexed by step, so count distinct consecutive timesteps.
  const std::vector<float>& timesteps = sampler->timesteps();
  const int evaluations = sampler->num_evaluations();
  t0 = Clock::now();
  int step = 0;
  for (int k = 0; k < evaluations; ++k) {
    const auto step_start = Clock::now();
    if (k > 0 && timesteps[static_cast<size_t>(k)] != timesteps[static_cast<size_t>(k - 1)]) ++step;
    const int schedule_step = std::min(step, request.steps - 1);
    Tensor x = latents.clone();
    sampler->scale_model_input(x, k);
    const uint64_t skipped_before = guidance.skipped_uncond_steps();
    const Tensor eps = guidance.predict(unet, x, timesteps[static_cast<size_t>(k)], schedule_step, request.steps);
    sampler->step(eps, k, latents, rng);
    if (trace.on_step) trace.on_step(k, x, eps, latents);
    if (progress) {
      progress(StepReport{k, evaluations, timesteps[static_cast<size_t>(k)],
                          request.guidance.schedule.at(schedule_step, request.steps),
                          guidance.skipped_uncond_steps() != skipped_before, since(step_start)});
    }
  }
  result.seconds_denoise = since(t0);
  result.final_latents = latents;
  result.unet_rows = guidance.unet_rows();
  result.skipped_uncond_steps = guidance.skipped_uncond_steps();

  if (request.decode) {
    t0 = Clock::now();
    // The UNet's activation sizes are not the VAE's: hand the cached blocks back rather than hold
    // both working sets at once (at 512x512 the cache held ~1 GB of UNet blocks during decode).
    be.release_cached_memory();
    result.vae_tiled = request.vae_tiling.value_or(estimated_decode_bytes(model.vae(), latents) >
                                                   request.vae_memory_limit_gb * 1e9);
    result.decoded = result.vae_tiled ? decode_tiled(model.vae(), be, latents, VaeTiling{})
                                      : model.vae().decode(be, latents);
    result.image = to_uint8_image(result.decoded);
    result.seconds_decode = since(t0);
  }
  return result;
}

}  // namespace otter

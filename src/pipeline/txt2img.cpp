#include "pipeline/txt2img.h"

#include <chrono>
#include <cmath>
#include <algorithm>
#include <cstring>
#include <optional>

#include "core/activity.h"
#include "core/error.h"
#include "core/stopwatch.h"
#include "guidance/composable_guidance.h"
#include "guidance/composable_prompt.h"
#include "guidance/guider_prediction.h"
#include "models/vae_tiling.h"
#include "pipeline/inpaint.h"
#include "sampling/noise_schedule.h"
#include "sampling/torch_cpu_generator.h"

namespace otter {
namespace {

// The noise one turn of images sees: each draw of n values for rows [r0, r1) is its slice of the
// draw the whole batch of B rows makes at that point, so a turn's images equal the one-batch run's.
class TurnNoise : public NoiseGenerator {
 public:
  TurnNoise(const TorchCpuGenerator& batch_generator, int64_t batch_rows, int64_t r0, int64_t r1)
      : generator_(batch_generator), rows_(batch_rows), r0_(r0), r1_(r1) {}
  void randn(float* out, size_t n) override {
    const size_t turn_rows = static_cast<size_t>(r1_ - r0_);
    if (turn_rows == static_cast<size_t>(rows_)) return generator_.randn(out, n);
    OTTER_CHECK(n % turn_rows == 0, "a sampler drew ", n, " noise values for ", turn_rows,
                " rows; images in turns need whole rows");
    const size_t per_row = n / turn_rows;
    buffer_.resize(per_row * static_cast<size_t>(rows_));
    generator_.randn(buffer_.data(), buffer_.size());
    std::memcpy(out, buffer_.data() + static_cast<size_t>(r0_) * per_row, n * sizeof(float));
  }

 private:
  TorchCpuGenerator generator_;
  int64_t rows_, r0_, r1_;
  std::vector<float> buffer_;
};

// Rows [r0, r1) of the batch, each prompt's row repeated for its images ([p0, p0, p1, p1, ...], as
// diffusers repeats per prompt).
Tensor prompt_rows(const Tensor& per_prompt_in, int64_t r0, int64_t r1, int images_per_prompt) {
  const Tensor per_prompt = per_prompt_in.contiguous();
  std::vector<int64_t> shape = per_prompt.shape().to_vector();
  shape[0] = r1 - r0;
  Tensor out = Tensor::empty(Shape(shape), per_prompt.dtype());
  const size_t row = per_prompt.nbytes() / static_cast<size_t>(per_prompt.dim(0));
  for (int64_t r = r0; r < r1; ++r)
    std::memcpy(static_cast<char*>(out.raw()) + (r - r0) * row,
                static_cast<const char*>(per_prompt.raw()) + (r / images_per_prompt) * row, row);
  return out;
}

// Copies `part` (rows [r0, r0 + part rows) of a batch of B) into `whole`, made on first use.
void copy_rows_into(Tensor& whole, const Tensor& part, int64_t r0, int64_t B) {
  if (!whole.defined()) {
    std::vector<int64_t> shape = part.shape().to_vector();
    shape[0] = B;
    whole = Tensor::empty(Shape(shape), part.dtype());
  }
  std::memcpy(static_cast<char*>(whole.raw()) + r0 * (part.nbytes() / static_cast<size_t>(part.dim(0))), part.raw(),
              part.nbytes());
}

// What a denoising step is doing, for an error's message; formatted only if one happens.
struct StepActivity {
  int k, evaluations, turn, turns;
  int64_t images, w, h;
  static std::string describe(const void* self) {
    const auto& a = *static_cast<const StepActivity*>(self);
    return cat("denoising step ", a.k + 1, " of ", a.evaluations,
               a.turns > 1 ? cat(" (turn ", a.turn + 1, " of ", a.turns, ")") : std::string(), ": the UNet on ",
               a.images, " images of ", a.w, "x", a.h, " latents");
  }
};

void check_request(const Txt2ImgRequest& r, int latent_divisor) {
  OTTER_CHECK(!r.prompts.empty(), "no prompt given");
  OTTER_CHECK(r.images_per_prompt >= 1, "--images must be at least 1, got ", r.images_per_prompt);
  OTTER_CHECK(r.steps >= 1, "--steps must be at least 1, got ", r.steps);
  OTTER_CHECK(r.max_batch >= 0, "--max-batch must be at least 1, got ", r.max_batch);
  OTTER_CHECK(r.width > 0 && r.height > 0 && r.width % 8 == 0 && r.height % 8 == 0, "image size ", r.width, "x",
              r.height, " is not a multiple of 8 in both dimensions; try -W ", std::max(8, (r.width + 4) / 8 * 8), " -H ",
              std::max(8, (r.height + 4) / 8 * 8));
  OTTER_CHECK((r.width / 8) % latent_divisor == 0 && (r.height / 8) % latent_divisor == 0, "image size ", r.width, "x",
              r.height, ": this UNet needs width and height to be multiples of ", 8 * latent_divisor);
  OTTER_CHECK(r.negative_prompts.size() <= 1 || r.negative_prompts.size() == r.prompts.size(), "got ",
              r.negative_prompts.size(), " negative prompts for ", r.prompts.size(),
              " prompts: give one negative prompt for all, or one per prompt");
  if (r.init_image) img2img_first_step(r.steps, r.init_image->strength);  // throws for a bad strength
}

// The UNet must take the VAE's latents, or (an inpainting model) latents + mask + masked latents,
// and then a mask must come with the request.
void check_unet_inputs(StableDiffusion& model, const Txt2ImgRequest& r) {
  const int64_t latent = model.vae().config().latent_channels, unet_in = model.unet().config().in_channels;
  const bool inpainting_unet = unet_in == 2 * latent + 1;
  OTTER_CHECK(unet_in == latent || inpainting_unet, "the UNet takes ", unet_in, " input channels; otter runs UNets of ",
              latent, " (the VAE's latents) or ", 2 * latent + 1, " (inpainting models)");
  const bool masked = r.init_image && r.init_image->mask.defined();
  OTTER_CHECK(!inpainting_unet || masked, "this is an inpainting model (its UNet takes ", unet_in, " channels: latents, "
              "mask and the masked picture's latents): give the picture with --init-image and what to repaint with --mask");
  if (masked) {
    const Tensor& m = r.init_image->mask;
    OTTER_CHECK(m.rank() == 4 && m.dim(0) == 1 && m.dim(1) == 1 && m.dim(2) == r.height && m.dim(3) == r.width,
                "the mask is ", m.rank() == 4 ? cat(m.dim(3), "x", m.dim(2)) : m.describe(), " but the image is ", r.width,
                "x", r.height, ": give a mask of the init image's size (--resize resamples both)");
  }
}

// Each prompt's sub-prompts (AND syntax), and whether any prompt is composable.
struct PromptParts {
  std::vector<std::vector<WeightedPrompt>> per_prompt;
  bool composable = false;
};

PromptParts prompt_parts(const Txt2ImgRequest& r) {
  PromptParts parts;
  for (const std::string& p : r.prompts) {
    parts.per_prompt.push_back(split_composable_prompt(p));
    parts.composable = parts.composable || is_composable(parts.per_prompt.back());
  }
  return parts;
}

// scaling_factor x a sample of the VAE's latent distribution for a picture, drawn from `rng`
// (diffusers' retrieve_latents(vae.encode(image), generator) · scaling_factor).
Tensor encode_picture(StableDiffusion& model, const Tensor& px, const Txt2ImgRequest& r, NoiseGenerator& rng,
                      const char* what) {
  OTTER_CHECK(px.defined() && px.rank() == 4 && px.dim(0) == 1 && px.dim(1) == 3, "the init image must be one RGB "
              "picture [1, 3, H, W], got ", px.defined() ? px.describe() : std::string("none"));
  OTTER_CHECK(px.dim(3) == r.width && px.dim(2) == r.height, "the init image is ", px.dim(3), "x", px.dim(2),
              " but the image to make is ", r.width, "x", r.height,
              ": leave out -W/-H (the picture's size is used), or add --resize to resample the picture");
  OTTER_CHECK(model.vae().has_encoder(), "this model's VAE has no encoder (no encoder.* tensors), which image to "
              "image needs to turn the picture into latents; use a checkpoint with the full VAE");
  const Activity activity(cat("encoding the ", r.width, "x", r.height, " ", what, " with the VAE"));
  Backend& be = model.backend();
  const Tensor z = model.vae().encode(be, px.to(DType::F32).contiguous()).sample(be, rng);
  return model.vae().scale_latents(be, z).to(DType::F32).contiguous();
}

}  // namespace

bool has_composable_prompts(const Txt2ImgRequest& request) { return prompt_parts(request).composable; }

namespace {

// The UNet rows one image takes at one evaluation, the one place that decides it: composable
// prompts 1 + K; a guider what it needs; classic CFG 2, or 1 at scale 1.
struct EvaluationRows {
  int rows = 1;
  bool uncond = false, perturbed = false;
};

EvaluationRows rows_at(const Txt2ImgRequest& r, const PromptParts& parts, const Guider* guider, const GuiderStep& s) {
  if (parts.composable) {
    size_t most = 1;
    for (const auto& p : parts.per_prompt) most = std::max(most, p.size());
    return {1 + static_cast<int>(most), true, false};
  }
  if (guider) {
    const Needs n = guider->needs(s);
    const bool perturbs_uncond = n.uncond && guider->perturbation() && guider->perturbation()->on_uncond;
    return {1 + n.uncond + n.perturbed, n.uncond, n.perturbed || perturbs_uncond};
  }
  const bool guided = r.guidance.schedule.at(s.step, r.steps) != 1.0f;
  return {1 + guided, guided, false};
}

}  // namespace

int steps_without_uncond(const Txt2ImgRequest& request) {
  const PromptParts parts = prompt_parts(request);
  const std::unique_ptr<Guider> guider = request.guider ? request.guider->make() : nullptr;
  int steps = 0;
  for (int s = 0; s < request.steps; ++s)
    steps += !rows_at(request, parts, guider.get(), GuiderStep{s, request.steps, 0.0f}).uncond;
  return steps;
}

int unet_rows_per_image(const Txt2ImgRequest& request) {
  const PromptParts parts = prompt_parts(request);
  const std::unique_ptr<Guider> guider = request.guider ? request.guider->make() : nullptr;
  int rows = 1;
  for (int s = 0; s < request.steps; ++s)
    rows = std::max(rows, rows_at(request, parts, guider.get(), GuiderStep{s, request.steps, 0.0f}).rows);
  return rows;
}

std::vector<Evaluation> plan_evaluations(const Sampler& sampler, int steps) {
  const std::vector<float>& timesteps = sampler.timesteps();
  // Each evaluation's k-diffusion sigma (guidance intervals): the sampler's own, or for the
  // alpha-space samplers the training schedule's at the timestep.
  const std::vector<float> training_sigmas =
      sampler.sigmas().empty() ? sigmas_from_alphas_cumprod(make_training_schedule(sampler.config()).alphas_cumprod)
                               : std::vector<float>{};
  std::vector<Evaluation> plan;
  int step = 0;
  for (size_t k = 0; k < timesteps.size(); ++k) {
    // Samplers with several evaluations per step (Heun) repeat the step's timestep; the guidance
    // schedule is indexed by step, so count distinct consecutive timesteps.
    if (k > 0 && timesteps[k] != timesteps[k - 1]) ++step;
    const float sigma = !sampler.sigmas().empty() ? sampler.sigmas()[k]
                                                  : static_cast<float>(numpy_interp(timesteps[k], training_sigmas));
    plan.push_back({timesteps[k], std::min(step, steps - 1), sigma});
  }
  return plan;
}

int first_evaluation(const Txt2ImgRequest& request, const Sampler& sampler) {
  return request.init_image ? img2img_first_step(request.steps, request.init_image->strength) * sampler.order() : 0;
}

PlannedRows planned_unet_rows(const Txt2ImgRequest& request, const SchedulerConfig& scheduler) {
  std::unique_ptr<Sampler> sampler =
      make_sampler(request.sampler.empty() ? default_sampler_for(scheduler) : request.sampler, scheduler,
                   request.sampler_options);
  sampler->set_timesteps(request.steps);
  PlannedRows rows;
  rows.evaluations = sampler->num_evaluations();
  const PromptParts parts = prompt_parts(request);
  const std::unique_ptr<Guider> guider = request.guider ? request.guider->make() : nullptr;
  rows.exact = !(request.guider && request.guider->adaptive);
  const std::vector<Evaluation> plan = plan_evaluations(*sampler, request.steps);
  const auto first = static_cast<size_t>(first_evaluation(request, *sampler));
  rows.evaluations -= static_cast<int>(first);
  for (size_t k = first; k < plan.size(); ++k) {
    const Evaluation& e = plan[k];
    const EvaluationRows at = rows_at(request, parts, guider.get(), GuiderStep{e.step, request.steps, e.timestep, e.sigma});
    rows.rows += static_cast<uint64_t>(at.rows);
    rows.perturbed += at.perturbed;
  }
  return rows;
}

void check_guider_fits(const Guider& guider, const Sampler& sampler, int64_t h, int64_t w) {
  guider.check_latent_size(h, w);
  OTTER_CHECK(!guider.renoises_with_uncond() || sampler.supports_cfg_pp(),
              "CFG++ needs a sampler whose step is a denoised estimate plus a noise direction: --sampler euler or "
              "ddim, not ", sampler.name());
}

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
  check_unet_inputs(model, request);
  Backend& be = model.backend();
  Txt2ImgResult result;

  const SchedulerConfig& scheduler = request.scheduler_config ? *request.scheduler_config : model.scheduler_config();
  result.sampler = request.sampler.empty() ? default_sampler_for(scheduler) : request.sampler;
  // An unknown sampler or a bad step count fails here, before any work; each turn makes its own.
  make_sampler(result.sampler, scheduler, request.sampler_options)->set_timesteps(request.steps);
  request.guidance.schedule.validate(request.steps);
  if (request.guider)
    check_guider_fits(*request.guider->make(), *make_sampler(result.sampler, scheduler, request.sampler_options),
                      request.height / 8, request.width / 8);

  // Text: cond rows per prompt; uncond from the negative prompt(s), "" by default. Both padded to
  // the same number of 77-token windows so they can share one batch.
  auto t0 = SteadyClock::now();
  std::optional<Activity> text_activity;
  text_activity.emplace(cat("encoding ", request.prompts.size(), request.prompts.size() == 1 ? " prompt" : " prompts",
                             " with the text encoder"));
  // Composable prompts (AND): `cond` holds one row per distinct sub-prompt text, and each prompt
  // refers to its rows with their weights.
  const PromptParts parts = prompt_parts(request);
  std::vector<std::vector<std::pair<int64_t, double>>> sub_rows;  // per prompt: (row of cond, weight)
  std::vector<std::string> texts = request.prompts;
  if (parts.composable) {
    OTTER_CHECK(!request.guider, "a prompt with AND (composable prompts) is guided by its own sum of directions; "
                                 "--guidance methods take one prompt. Drop --guidance, or the AND");
    texts.clear();
    for (const auto& prompt_parts : parts.per_prompt) {
      sub_rows.emplace_back();
      for (const WeightedPrompt& part : prompt_parts) {
        const auto it = std::find(texts.begin(), texts.end(), part.text);
        sub_rows.back().emplace_back(it - texts.begin(), part.weight);
        if (it == texts.end()) texts.push_back(part.text);
      }
    }
  }
  Tensor cond = model.encode_prompts(texts, request.text);
  std::vector<std::string> negatives = request.negative_prompts;
  if (negatives.empty()) negatives.assign(1, "");
  const bool any_guided = parts.composable || steps_without_uncond(request) < request.steps;
  Tensor uncond;
  if (any_guided) {
    // The same negative for every prompt is encoded once.
    Tensor neg = model.encode_prompts(negatives, request.text);
    const int64_t prompts = static_cast<int64_t>(request.prompts.size());
    if (neg.dim(0) == 1 && prompts > 1) neg = prompt_rows(neg, 0, prompts, static_cast<int>(prompts));
    const int64_t windows = std::max(cond.dim(1), neg.dim(1)) / kClipContextLength;
    cond = model.pad_to_windows(cond, windows, request.text);
    uncond = model.pad_to_windows(neg, windows, request.text);
  }
  if (!uncond.defined()) uncond = cond;  // never evaluated: every step has scale 1
  // cond and uncond hold one row per prompt; each turn repeats them for its own images only.
  result.seconds_text = seconds_since(t0);
  text_activity.reset();
  if (request.release_weights_when_done) {
    model.text_encoder().release_prepared_weights();
    // The freed weights would otherwise wait in the allocator's cache for blocks of their sizes,
    // which the UNet never asks for: SD 1.5's f32 text encoder kept 0.34 GB through the denoising.
    be.release_cached_memory();
  }

  // Noise: one torch-compatible draw for the whole batch, as diffusers does.
  const int64_t B = static_cast<int64_t>(request.prompts.size()) * request.images_per_prompt, h = request.height / 8,
                w = request.width / 8;
  const int64_t latent_channels = model.vae().config().latent_channels;
  // With noise_batch_rows the images are rows [noise_first_row, +B) of a larger batch's draws.
  const int64_t noise_rows = request.noise_batch_rows > 0 ? request.noise_batch_rows : B;
  const int64_t first_row = request.noise_batch_rows > 0 ? request.noise_first_row : 0;
  OTTER_CHECK(first_row >= 0 && first_row + B <= noise_rows, "images ", first_row, "..", first_row + B - 1,
              " of a batch of ", noise_rows, " do not exist");
  TorchCpuGenerator rng(request.seed);
  // Image to image: the picture's latent sample is the generator's first draw, before the noise
  // (an inpainting model at strength 1 starts from pure noise and skips it).
  const bool inpaint = request.init_image && request.init_image->mask.defined();
  const bool unet_takes_mask = inpaint && model.unet().config().in_channels != latent_channels;
  const bool from_pure_noise = !request.init_image || (inpaint && request.init_image->strength == 1.0);
  if (request.init_image && !(unet_takes_mask && from_pure_noise))
    result.image_latents = encode_picture(model, request.init_image->pixels, request, rng, "init image");
  {
    Tensor all = Tensor::empty(Shape{noise_rows, latent_channels, h, w}, DType::F32);
    rng.randn(all.f32(), static_cast<size_t>(all.numel()));
    result.init_noise = noise_rows == B ? all : all.slice(0, first_row, first_row + B).contiguous().clone();
  }

  // Inpainting: the masked picture's latent sample is the next draw; the mask at latent size.
  Tensor latent_mask, masked_latents;
  if (inpaint) {
    masked_latents = encode_picture(model, masked_picture(request.init_image->pixels, request.init_image->mask), request,
                                    rng, "masked picture");
    latent_mask = latent_mask_of(request.init_image->mask, static_cast<int>(request.width / w));
  }

  // The images run in turns of at most max_batch when asked (the memory plan's choice): each turn
  // starts from its rows of the one draw, and its ancestral noise is its rows of the whole
  // batch's draws (TurnNoise), so the images are those of the one-batch run.
  const int64_t per_turn = request.max_batch > 0 ? std::min<int64_t>(request.max_batch, B) : B;
  const int turns = static_cast<int>((B + per_turn - 1) / per_turn);
  result.turns = turns;
  for (int turn = 0; turn < turns; ++turn) {
    const int64_t r0 = turn * per_turn, r1 = std::min(B, r0 + per_turn);
    std::unique_ptr<Sampler> sampler = make_sampler(result.sampler, scheduler, request.sampler_options);
    sampler->set_timesteps(request.steps);
    // A copy of the generator as it stands after the initial draw.
    TurnNoise noise(rng, noise_rows, first_row + r0, first_row + r1);
    Tensor latents = result.init_noise.slice(0, r0, r1).contiguous().clone();
    // Image to image begins part-way through the schedule, from the picture's latents noised there.
    const int first = first_evaluation(request, *sampler);
    if (!from_pure_noise) {
      sampler->set_begin_index(first);
      const size_t per_row = static_cast<size_t>(result.image_latents.numel());
      for (int64_t b = 0; b < r1 - r0; ++b) {
        const std::span<float> row(latents.f32() + static_cast<size_t>(b) * per_row, per_row);
        sampler->add_noise(std::span<const float>(result.image_latents.f32(), per_row), row, first, row);
      }
    } else {
      const float sigma0 = sampler->init_noise_sigma();
      for (int64_t i = 0; i < latents.numel(); ++i) latents.f32()[i] *= sigma0;
    }

    // Classic CFG (scale schedule, otter's semantics for s <= 1), or a guider (diffusers' methods).
    const Tensor turn_uncond = prompt_rows(uncond, r0, r1, request.images_per_prompt);
    std::unique_ptr<NoisePrediction> guidance_owner;
    if (parts.composable) {
      // The turn's sub-prompt rows, image by image, with the image each belongs to.
      std::vector<int64_t> text_rows, image_of;
      std::vector<double> weights;
      for (int64_t b = r0; b < r1; ++b)
        for (const auto& [row, weight] : sub_rows[static_cast<size_t>(b / request.images_per_prompt)]) {
          text_rows.push_back(row);
          image_of.push_back(b - r0);
          weights.push_back(weight);
        }
      Tensor turn_conds;
      for (int64_t row : text_rows) {
        const Tensor one = cond.slice(0, row, row + 1);
        turn_conds = turn_conds.defined() ? concat_rows(turn_conds, one) : one.contiguous();
      }
      guidance_owner = std::make_unique<ComposableGuidance>(turn_uncond, turn_conds, std::move(image_of),
                                                            std::move(weights), request.guidance);
    } else if (request.guider)
      guidance_owner = std::make_unique<GuiderPrediction>(turn_uncond, prompt_rows(cond, r0, r1, request.images_per_prompt),
                                                          request.guider->make(),
                                                          request.guidance.batching,
                                                          model.unet().transformer_block_names());
    else
      guidance_owner = std::make_unique<ClassifierFreeGuidance>(
          turn_uncond, prompt_rows(cond, r0, r1, request.images_per_prompt), request.guidance);
    NoisePrediction& guidance = *guidance_owner;
    Denoiser unet = trace.unet ? trace.unet
                               : Denoiser([&](const Tensor& x, float t, const Tensor& context,
                                              const RowPerturbation* perturbation) {
                                   return model.unet().forward(be, x, t, context, {}, perturbation);
                                 });
    if (unet_takes_mask) unet = with_inpainting_channels(std::move(unet), latent_mask, masked_latents);
    const Tensor turn_noise = result.init_noise.slice(0, r0, r1).contiguous();
    // The caller hears when this turn's loop is over, however it ends.
    struct LoopEnd {
      const std::function<void()>& f;
      ~LoopEnd() {
        if (f) f();
      }
    };
    std::optional<LoopEnd> loop_end;
    loop_end.emplace(LoopEnd{trace.denoise_end});

    // Samplers with several evaluations per step (Heun) repeat the step's timestep; the guidance
    // schedule is indexed by step, so count distinct consecutive timesteps.
    const std::vector<float>& timesteps = sampler->timesteps();
    const int evaluations = sampler->num_evaluations();
    if (turn == 0) result.step_seconds.reserve(static_cast<size_t>(turns) * static_cast<size_t>(evaluations));
    const std::vector<Evaluation> plan = plan_evaluations(*sampler, request.steps);
    // The scale the progress report shows: a guider's own, or the schedule's at each step.
    const float guider_scale =
        request.guider ? static_cast<float>(request.guider->params.value("guidance_scale", NAN)) : NAN;
    StepActivity where{0, evaluations, turn, turns, r1 - r0, w, h};
    t0 = SteadyClock::now();
    for (int k = first; k < evaluations; ++k) {
      const auto step_start = SteadyClock::now();
      where.k = k;
      const Activity activity(StepActivity::describe, &where);
      const int schedule_step = plan[static_cast<size_t>(k)].step;
      Tensor x = latents.clone();
      sampler->scale_model_input(x, k);
      const uint64_t skipped_before = guidance.skipped_uncond_steps();
      const Tensor eps =
          guidance.predict(unet, x, timesteps[static_cast<size_t>(k)], schedule_step, request.steps,
                           plan[static_cast<size_t>(k)].sigma);
      if (const Tensor renoise = guidance.renoise_prediction(); renoise.defined())
        sampler->step_cfg_pp(eps, renoise, k, latents, noise);
      else
        sampler->step(eps, k, latents, noise);
      // An ordinary model keeps the unmasked region on the picture's own noisy path.
      if (inpaint && !unet_takes_mask) blend_known_region(*sampler, k, result.image_latents, turn_noise, latent_mask, latents);
      if (trace.on_step) trace.on_step(k, x, eps, latents);
      result.step_seconds.push_back(seconds_since(step_start));  // reserved: no allocation in the loop
      if (progress) {
        StepReport report{k - first, evaluations - first, timesteps[static_cast<size_t>(k)],
                          request.guider ? guider_scale : request.guidance.schedule.at(schedule_step, request.steps),
                          guidance.skipped_uncond_steps() != skipped_before, result.step_seconds.back()};
        report.turn = turn;
        report.turns = turns;
        progress(report);
      }
    }
    result.seconds_denoise += seconds_since(t0);
    loop_end.reset();
    copy_rows_into(result.final_latents, latents, r0, B);
    result.unet_rows += guidance.unet_rows();
    result.perturbed_rows += guidance.perturbed_rows();
    result.evaluations = evaluations - first;
    result.first_evaluation = first;
    // Every turn skips the same steps; count them once.
    result.skipped_uncond_steps = guidance.skipped_uncond_steps();

    if (request.decode) {
      t0 = SteadyClock::now();
      Activity activity(cat("decoding ", r1 - r0, r1 - r0 == 1 ? " image" : " images", " of ", request.width, "x",
                            request.height, " with the VAE"));
      // The UNet's activation sizes are not the VAE's: hand the cached blocks back rather than hold
      // both working sets at once (at 512x512 the cache held ~1 GB of UNet blocks during decode).
      if (request.release_weights_when_done && turn + 1 == turns) model.unet().release_prepared_weights();
      be.release_cached_memory();
      result.vae_tiled = request.vae_tiling.value_or(estimated_decode_bytes(model.vae(), latents) >
                                                     request.vae_memory_limit_gb * 1e9);
      const Tensor decoded = result.vae_tiled ? decode_tiled(model.vae(), be, latents, VaeTiling{})
                                              : model.vae().decode(be, latents);
      Tensor image = to_uint8_image(decoded);
      if (inpaint) {  // the input's pixels outside the (blurred) mask
        copy_rows_into(result.image_before_overlay, image, r0, B);
        image = overlay_on_input(image, request.init_image->pixels, request.init_image->mask, request.init_image->mask_blur);
      }
      copy_rows_into(result.image, image, r0, B);
      if (request.keep_decoded) copy_rows_into(result.decoded, decoded, r0, B);
      result.seconds_decode += seconds_since(t0);
      // The next turn's UNet sizes are not the decoder's either.
      if (turn + 1 < turns) be.release_cached_memory();
    }
  }
  return result;
}

double Txt2ImgResult::median_step_seconds() const {
  if (step_seconds.empty()) return 0;
  std::vector<double> sorted = step_seconds;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

double Txt2ImgResult::fastest_step_seconds() const {
  return step_seconds.empty() ? 0 : *std::min_element(step_seconds.begin(), step_seconds.end());
}

}  // namespace otter

#pragma once
// Text to image: encode prompts, denoise from seeded noise with classifier-free guidance, decode.
// The loop is diffusers' StableDiffusionPipeline.__call__, step for step:
//
//   cond = TE(prompts) (each repeated per image), uncond = TE(negative or "") likewise
//   noise = randn([B, 4, H/8, W/8], seed)          one torch-compatible draw
//   latents = noise · init_noise_sigma
//   for each sampler evaluation k:
//     x = scale_model_input(latents, k)
//     eps = guidance.predict(UNet, x, t_k)          one UNet call on [uncond…, cond…]
//     latents = sampler.step(eps, k, latents)       ancestral noise from the same generator
//   image = VAE.decode(latents)
//
// With an init image the same loop does image to image (pipeline/init_image.h): the latents start
// from the picture's, noised to the step `strength` selects, and the loop runs from there; with a
// mask too, inpainting (pipeline/inpaint.h).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "guidance/classifier_free_guidance.h"
#include "guidance/guidance_recipe.h"
#include "pipeline/init_image.h"
#include "pipeline/stable_diffusion.h"
#include "sampling/sampler.h"

namespace otter {

struct Txt2ImgRequest {
  std::vector<std::string> prompts{""};
  // One negative prompt for all prompts, or one per prompt; empty = the empty prompt.
  std::vector<std::string> negative_prompts;
  int images_per_prompt = 1;
  int width = 512, height = 512;
  int steps = 20;
  std::string sampler;  // "" = the model's own scheduler config
  // Replaces the model's scheduler_config.json (e.g. a diffusers config with overrides).
  std::optional<SchedulerConfig> scheduler_config;
  SamplerOptions sampler_options;
  uint64_t seed = 0;
  GuidanceOptions guidance;
  // A guider instead of classic CFG (`--guidance RECIPE`); guidance.batching still applies, the
  // schedule and rescale do not (the recipe has its own parameters).
  std::optional<GuidanceRecipe> guider;
  TextEncodeOptions text;
  bool decode = true;  // false: stop at the final latents
  // VAE decode in tiles: forced on/off, or (nullopt) automatic when the estimated decoder memory
  // exceeds vae_memory_limit_gb.
  std::optional<bool> vae_tiling;
  double vae_memory_limit_gb = 2.0;
  // Images per turn (0: all at once). Turns bound the UNet's and the VAE's batch; the images are
  // those of the one-batch run (each turn's noise is its rows of the whole batch's draws).
  int max_batch = 0;
  bool keep_decoded = false;  // also return the f32 decoder output (B x 3 x H x W; parity tests)
  // For a caller that generates once and exits (the CLI): give back the text encoder's prepared
  // weights once the prompts are encoded, and the UNet's before the last turn's decode, so the
  // decoder's working memory does not stack on 1.7 GB of SD 1.5 UNet weights (bf16). A model
  // used again afterwards prepares them again (seconds), so the server and the lab keep them.
  bool release_weights_when_done = false;
  // The images' noise is rows [noise_first_row, noise_first_row + B) of the draws a batch of
  // noise_batch_rows images makes (0: their own batch): one image of an earlier batch again.
  int64_t noise_batch_rows = 0, noise_first_row = 0;
  // Image to image: start from this picture (width and height must be its size).
  std::optional<InitImage> init_image;
};

struct StepReport {
  int evaluation = 0;     // 0-based
  int evaluations = 0;    // total UNet evaluations
  float timestep = 0;
  float guidance_scale = 0;
  bool uncond_skipped = false;
  double seconds = 0;     // this step's wall time
  int turn = 0, turns = 1;  // which turn of images (see Txt2ImgRequest::max_batch)
};
using StepCallback = std::function<void(const StepReport&)>;

struct Txt2ImgResult {
  Tensor init_noise;     // [B, 4, h, w] the seeded draw
  Tensor image_latents;  // [1, 4, h, w] image to image: scaling_factor x the picture's latent sample
  Tensor final_latents;  // [B, 4, h, w]
  Tensor decoded;        // [B, 3, H, W] VAE output, before clamping (only with keep_decoded)
  Tensor image;          // [B, H, W, 3] U8, clamp(decoded/2 + 0.5)·255 rounded half to even
  Tensor image_before_overlay;  // inpainting: `image` before the input is laid over the unmasked part
  std::string sampler;   // the sampler name used
  bool vae_tiled = false;
  int turns = 1;                     // turns the images ran in
  uint64_t unet_rows = 0;            // batch rows the UNet evaluated in total
  uint64_t perturbed_rows = 0;       // of which with a perturbation (PAG, SEG, SLG, auto-guidance)
  int evaluations = 0;               // UNet evaluations per image (sampler steps, Heun's two per step)
  int first_evaluation = 0;          // where the loop began in the schedule (image to image: t_start · order)
  uint64_t skipped_uncond_steps = 0; // steps with scale 1 that ran without the uncond rows
  double seconds_denoise = 0, seconds_decode = 0, seconds_text = 0;
  // Every evaluation's wall time (sampler step, guidance and UNet call), turn after turn: its median
  // is the steady step time, what otter-bench's CFG step measures (the first step of a run also
  // prepares the weights); its fastest is the like of otter-bench's figure, a best of runs.
  std::vector<double> step_seconds;
  double median_step_seconds() const;
  double fastest_step_seconds() const;  // 0 without steps
};

// Per-evaluation observer (parity tests, the server's previews): called after each sampler step
// with the model input, the guided prediction and the new latents. And how a caller other than the
// CLI runs the loop: `unet` replaces the model's UNet call (otter serve's batcher merges the rows
// of several requests into one call there); `denoise_end` is called when a turn's denoising loop
// has ended (before its decode), and when the loop is left by an exception.
struct Txt2ImgTrace {
  std::function<void(int k, const Tensor& model_input, const Tensor& noise_pred, const Tensor& latents)> on_step;
  Denoiser unet;
  std::function<void()> denoise_end;
};

Txt2ImgResult txt2img(StableDiffusion& model, const Txt2ImgRequest& request, const StepCallback& progress = {},
                      const Txt2ImgTrace& trace = {});

// Steps of `request` that run without the unconditional rows: classic CFG's steps at scale 1, or a
// guider's steps that need the conditional prediction alone. Without the steps' noise levels a
// guidance interval counts as guiding everywhere (an upper bound on the work).
int steps_without_uncond(const Txt2ImgRequest& request);

// Whether a prompt uses the AND syntax of composable prompts (guidance/composable_prompt.h).
bool has_composable_prompts(const Txt2ImgRequest& request);

// The most UNet rows one image takes at a step in one batched call: 1 (cond), 2 ([uncond, cond])
// or 3 (PAG, SEG, SLG: [uncond, cond, perturbed]); 1 + K for a prompt of K sub-prompts (AND).
int unet_rows_per_image(const Txt2ImgRequest& request);

// One UNet evaluation of a run: its timestep, the step it belongs to (guidance schedules and
// windows count steps; Heun evaluates twice per step) and its k-diffusion sigma (the sampler's, or
// the training schedule's at the timestep for the alpha-space samplers).
struct Evaluation {
  float timestep = 0;
  int step = 0;
  float sigma = 0;
};
std::vector<Evaluation> plan_evaluations(const Sampler& sampler, int steps);

// The evaluation the loop of `request` begins at: 0, or with an init image t_start · the sampler's
// order (image to image's get_timesteps). `sampler` must have its timesteps set.
int first_evaluation(const Txt2ImgRequest& request, const Sampler& sampler);

// The UNet rows one image of `request` takes, counted from the guidance's needs at every
// evaluation without running anything (otter-bench's per-method table). Adaptive skipping
// decides from the predictions, so for it the count is an upper bound (exact = false).
struct PlannedRows {
  uint64_t rows = 0, perturbed = 0;
  int evaluations = 0;
  bool exact = true;
};
PlannedRows planned_unet_rows(const Txt2ImgRequest& request, const SchedulerConfig& scheduler);

// Throws, before any work, if `guider` cannot run on h x w latents (FDG's pyramid) or with this
// sampler (CFG++ needs euler or ddim).
void check_guider_fits(const Guider& guider, const Sampler& sampler, int64_t h, int64_t w);

// [B, 3, H, W] decoded VAE output -> [B, H, W, 3] bytes, as diffusers' "pil" output does.
Tensor to_uint8_image(const Tensor& decoded);

// The sampler names otter accepts for `--sampler`, and the sampler it picks for a model config
// when none is given (the one matching the model's scheduler class).
std::string default_sampler_for(const SchedulerConfig& config);

}  // namespace otter

// `otter generate`: text to image with classifier-free guidance.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "commands.h"
#include "generate_args.h"
#include "core/cpu_features.h"
#include "core/cpu_identity.h"
#include "core/error.h"
#include "core/number_text.h"
#include "io/safetensors.h"
#include "core/system_memory.h"
#include "models/transformer_block_choice.h"
#include "models/unet_config.h"
#include "pipeline/default_model.h"
#include "pipeline/memory_plan.h"
#include "pipeline/image_output.h"
#include "pipeline/init_image.h"
#include "io/lora.h"
#include "io/png.h"
#include "pipeline/stable_diffusion.h"
#include "pipeline/txt2img.h"
#include "text/prompt_attention.h"

namespace otter::cli {
namespace {

// Limits checked while parsing, so a typo fails at once (and --help states them).
constexpr int kMaxSide = 16384;
constexpr int kMaxSteps = 10000;
constexpr int kMaxImages = 4096;

// One line per step on a terminal (redrawn in place), one line per step in a log otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(bool quiet) : quiet_(quiet), tty_(isatty(STDERR_FILENO)) {}
  void operator()(const StepReport& r) {
    if (quiet_) return;
    total_seconds_ += r.seconds;
    // With images in turns the bar runs over all turns' evaluations.
    const int done = r.turn * r.evaluations + r.evaluation + 1, total = r.turns * r.evaluations;
    const double eta = total_seconds_ / done * (total - done);
    constexpr int kWidth = 24;
    const int filled = done * kWidth / total;
    std::string bar(static_cast<size_t>(filled), '=');
    bar.resize(kWidth, ' ');
    const std::string turn = r.turns > 1 ? cat("turn ", r.turn + 1, "/", r.turns, " ") : std::string();
    std::fprintf(stderr, "%s%sstep %3d/%d [%s] %6.2f s/step  ETA %5.1f s  t=%-7.2f cfg %.2f%s%s", tty_ ? "\r" : "",
                 turn.c_str(), r.evaluation + 1, r.evaluations, bar.c_str(), r.seconds, eta, r.timestep,
                 r.guidance_scale, r.uncond_skipped ? " (no uncond pass)" : "",
                 tty_ ? (done == total ? "\n" : "") : "\n");
    std::fflush(stderr);
  }

 private:
  bool quiet_, tty_;
  double total_seconds_ = 0;
};

// The --init-image picture at the size asked: its own when -W/-H are not given, resampled to
// them with --resize, else a clear refusal naming the fix. Sides must be multiples of 8.
PngImage read_init_picture(const GenerateArgs& a) {
  PngImage picture = read_png(a.init_image);
  const int want_w = a.width ? a.width : picture.width, want_h = a.height ? a.height : picture.height;
  if (want_w != picture.width || want_h != picture.height) {
    OTTER_CHECK(a.resize, "--init-image ", a.init_image, " is ", picture.width, "x", picture.height, " but -W/-H ask for ",
                want_w, "x", want_h, ": leave out -W/-H to keep the picture's size, or add --resize to resample it");
    picture = resize_picture(picture, want_w, want_h);
  }
  OTTER_CHECK(picture.width % 8 == 0 && picture.height % 8 == 0, "--init-image ", a.init_image, " is ", picture.width,
              "x", picture.height, "; its sides must be multiples of 8: add --resize -W ", std::max(8, picture.width / 8 * 8),
              " -H ", std::max(8, picture.height / 8 * 8));
  return picture;
}

void run_generate(const GenerateArgs& a) {
  OTTER_CHECK(a.rng == "cpu", "--rng ", a.rng, " is not available; otter reproduces torch's CPU generator (--rng cpu)");
  OTTER_CHECK(a.cfg_batch == "batched" || a.cfg_batch == "split", "--cfg-batch must be 'batched' or 'split', got '",
              a.cfg_batch, "'");
  OTTER_CHECK(a.long_prompt == "truncate" || a.long_prompt == "chunk", "--long-prompt must be 'truncate' or 'chunk'");
  const Precision precision = parse_precision(a.precision);

  Txt2ImgRequest request;
  request.prompts = a.prompts;
  request.negative_prompts = a.negatives;
  request.images_per_prompt = a.images;
  request.noise_batch_rows = a.noise_batch_rows;
  request.noise_first_row = a.noise_first_row;
  request.steps = a.steps;
  request.sampler = a.sampler;
  request.sampler_options.eta = a.eta;
  request.seed = resolve_seed(a.seed, a.quiet);
  request.guidance.schedule = GuidanceSchedule::parse(a.cfg_schedule.empty() ? a.cfg_scale : a.cfg_schedule);
  request.guidance.schedule.validate(a.steps);
  request.guidance.rescale = a.rescale;
  request.guidance.batching = a.cfg_batch == "split" ? CfgBatching::Split : CfgBatching::Batched;
  if (!a.guidance.empty()) {
    OTTER_CHECK(a.cfg_schedule.empty() && a.rescale == 0.0f,
                "--guidance takes the method's own parameters: give the scale and rescale in the recipe (e.g. "
                "cfg:scale=7,rescale=0.7, start/stop for a step window) instead of --cfg-schedule or --rescale");
    request.guider = GuidanceRecipe::parse(a.guidance);
  }
  request.text.long_prompt = a.long_prompt == "chunk" ? LongPrompt::chunk : LongPrompt::truncate;
  request.text.clip_skip = a.clip_skip;
  OTTER_CHECK(a.emphasis == "original" || a.emphasis == "none", "--emphasis must be 'original' or 'none', got '",
              a.emphasis, "'");
  request.text.prompt_weighting = a.emphasis == "original";
  // A weight that is not a number fails now, not after the model has loaded.
  if (request.text.prompt_weighting) {
    for (const std::string& p : a.prompts) (void)parse_prompt_attention(p);
    for (const std::string& p : a.negatives) (void)parse_prompt_attention(p);
  }
  if (a.vae_tile) request.vae_tiling = true;
  request.vae_memory_limit_gb = a.vae_memory_limit;
  if ((a.width && a.width % 8) || (a.height && a.height % 8))
    throw Error(cat("image size ", a.width, "x", a.height, " is not a multiple of 8 in both dimensions"));

  if (has_composable_prompts(request)) {
    OTTER_CHECK(!request.guider, "a prompt with AND (composable prompts) is guided by its own sum of directions; "
                                 "--guidance methods take one prompt. Drop --guidance, or the AND");
    OTTER_CHECK(request.guidance.rescale == 0.0f,
                "--rescale needs one conditional prediction per image; a prompt with AND has several");
  }
  const int skipped = steps_without_uncond(request);  // steps that run without the uncond rows

  // Check what can be checked before any expensive work: the output folder must be writable.
  check_output_writable(a.output);
  if (!a.save_latents.empty()) check_output_writable(a.save_latents);

  const int64_t total_images = static_cast<int64_t>(a.prompts.size()) * a.images;
  OTTER_CHECK(total_images <= kMaxImages, a.prompts.size(), " prompts x ", a.images, " images = ", total_images,
              " images; at most ", kMaxImages, " per run");

  // Image to image: the picture is read and sized before the model is opened.
  std::optional<PngImage> init_picture;
  std::optional<PngImage> init_mask;
  if (!a.init_image.empty()) init_picture = read_init_picture(a);
  else OTTER_CHECK(!a.resize, "--resize resamples an --init-image; there is none");
  if (!a.mask.empty()) {
    OTTER_CHECK(init_picture.has_value(), "--mask says what to repaint in an --init-image; give the picture too");
    init_mask = read_png(a.mask);
    if (init_mask->width != init_picture->width || init_mask->height != init_picture->height) {
      OTTER_CHECK(a.resize, "--mask ", a.mask, " is ", init_mask->width, "x", init_mask->height, " but the picture is ",
                  init_picture->width, "x", init_picture->height, ": give a mask of the picture's size, or add --resize");
      init_mask = resize_picture(*init_mask, init_picture->width, init_picture->height);
    }
  }
  OTTER_CHECK(a.mask_blur >= 0 && a.mask_blur <= 64, "--mask-blur must be in 0..64 pixels, got ", a.mask_blur);
  if (init_picture) img2img_first_step(a.steps, a.strength);  // a bad --strength fails now

  const std::filesystem::path model_path = a.model.empty() ? find_default_model() : std::filesystem::path(a.model);
  log(a.quiet, cat("otter: cpu ", describe_cpu()));
  if (a.precision == "auto") log(a.quiet, cat("otter: precision ", precision_name(precision), " (", precision_probe().reason, ")"));
  LoadOptions load;
  for (const std::string& c : a.config) load.model.config.emplace_back(c);
  if (!a.prediction.empty()) load.model.prediction = a.prediction;
  if (!a.variant.empty()) load.model.variant = a.variant;
  if (!a.tokenizer.empty()) load.tokenizer = a.tokenizer;
  for (const std::string& l : a.loras) load.loras.push_back(LoraSpec::parse(l));
  load.lora_lenient = a.lora_lenient;
  load.lora_unmerged = a.lora_unmerged;
  // Opening maps the files and checks every tensor against the configs; nothing is built yet.
  ModelFiles files = open_model(model_path, load.model);

  // A perturbed guider's layers must exist in this UNet: checked before anything is built.
  if (request.guider)
    if (const std::optional<Perturbation> p = request.guider->make()->perturbation())
      (void)choose_transformer_blocks(UNetConfig::from_json(files.configs.unet).transformer_block_names(), p->layers);

  // Default size: the model's native resolution (sample_size latents x 8); an init image's own.
  const int native = files.configs.unet.value("sample_size", 64) * 8;
  request.width = a.width ? a.width : native;
  request.height = a.height ? a.height : native;
  if (init_picture) {
    request.width = a.width ? a.width : init_picture->width;
    request.height = a.height ? a.height : init_picture->height;
    request.init_image = InitImage{.pixels = picture_to_vae_input(*init_picture), .strength = a.strength};
    if (init_mask) {
      request.init_image->mask = mask_from_picture(*init_mask, a.mask_invert);
      request.init_image->mask_blur = a.mask_blur;
    }
  }
  if (request.guider) request.guider->make()->check_latent_size(request.height / 8, request.width / 8);

  // The memory plan, before any weight is prepared or step run: refuse what cannot fit, run the
  // images in turns when fewer at a time do.
  MemoryPlanRequest plan_request;
  plan_request.width = request.width;
  plan_request.height = request.height;
  plan_request.unet_rows_per_image =
      request.guidance.batching == CfgBatching::Batched ? unet_rows_per_image(request) : 1;
  plan_request.precision = precision;
  plan_request.threads = a.threads > 0 ? a.threads : omp_get_max_threads();
  if (a.vae_tile) plan_request.vae_tiling = true;
  plan_request.vae_memory_limit_gb = a.vae_memory_limit;
  plan_request.base_bytes = process_memory().resident_bytes;
  plan_request.total_images = total_images;
  plan_request.encodes_image = init_picture.has_value();
  plan_request.releases_weights = true;  // one generation, then the process ends
  const MemoryBudget budget = memory_budget(a.memory_limit > 0 ? std::optional<double>(a.memory_limit) : std::nullopt);
  const std::optional<int64_t> max_batch = a.max_batch > 0 ? std::optional<int64_t>(a.max_batch) : std::nullopt;
  const MemoryDecision memory = fit_memory(files.configs, plan_request, total_images, max_batch, budget);
  log(a.quiet, cat("otter: memory: estimated peak ", memory.plan.describe(), "; available ",
                   budget.bytes ? format_gb(*budget.bytes) : std::string("unknown"), " (", budget.source, ")"));
  if (memory.chose_turns) {
    MemoryPlanRequest all = plan_request;
    all.images = std::min<int64_t>(total_images, max_batch.value_or(total_images));
    log(a.quiet, cat("otter: memory: ", all.images, " images at once would need ", format_gb(plan_memory(files.configs, all).peak()),
                     "; running the ", total_images, " images in turns of ", memory.turn_images, " (as --max-batch ",
                     memory.turn_images, "), same images"));
  }
  request.max_batch = memory.turn_images < total_images ? static_cast<int>(memory.turn_images) : 0;
  request.release_weights_when_done = true;  // as the plan assumed
  request.vae_tiling = memory.plan.vae_tiled;  // the plan decided with the pipeline's own rule

  auto backend = make_cpu_backend(precision, a.threads);
  auto model = StableDiffusion::load(std::move(files), *backend, load);
  for (const std::string& note : model->files().notes) log(a.quiet, "otter: " + note);
  log(a.quiet, cat("otter: loaded ", model->files().name, " in ", model->load_seconds(), " s (", backend->name(), ")"));

  // Say when guidance is off: a scale of 1 needs no unconditional pass.

  if (request.guider)
    log(a.quiet, cat("otter: guidance ", request.guider->to_string()));
  else if (skipped == request.steps)
    log(a.quiet, "otter: guidance scale is 1: the unconditional pass is skipped (half the UNet work)");
  else if (skipped > 0)
    log(a.quiet, cat("otter: guidance scale is 1 on ", skipped, " of ", request.steps,
                     " steps: the unconditional pass is skipped there"));

  ProgressBar progress(a.quiet);
  const Txt2ImgResult result = txt2img(*model, request, std::ref(progress));
  if (result.vae_tiled) log(a.quiet, "otter: VAE decoded in 64x64-latent tiles (overlap 16, cross-faded)");
  if (request.guider)
    log(a.quiet, cat("otter: guidance: the unconditional pass was skipped on ", result.skipped_uncond_steps,
                     " UNet evaluations", result.turns > 1 ? " (per turn)" : ""));
  // Rows the method's every prediction on every evaluation would take, and classic CFG's 2 per image.
  const uint64_t images_rows = static_cast<uint64_t>(total_images) * static_cast<uint64_t>(result.evaluations);
  const uint64_t full_rows = images_rows * static_cast<uint64_t>(unet_rows_per_image(request));
  log(a.quiet, cat("otter: sampler ", result.sampler, ", ", result.unet_rows, " UNet rows (",
                   result.perturbed_rows ? cat(result.perturbed_rows, " perturbed; ") : std::string(), full_rows - result.unet_rows,
                   " saved of ", full_rows, "; CFG takes ", 2 * images_rows, "); text ", result.seconds_text,
                   " s, denoise ", result.seconds_denoise, " s (median step ", result.median_step_seconds(), " s, fastest ",
                   result.fastest_step_seconds(), " s), decode ",
                   result.seconds_decode, " s"));
  log(a.quiet, cat("otter: memory: peak RSS ", format_gb(process_memory().peak_resident_bytes), " (estimated ",
                   format_gb(memory.plan.peak()), ")"));

  if (!a.save_latents.empty()) {
    // The work the run took, beside the tensors (safetensors metadata, strings).
    const std::map<std::string, std::string> metadata{
        {"otter_guidance", request.guider ? request.guider->to_string() : cat("cfg ", a.cfg_schedule.empty() ? a.cfg_scale : a.cfg_schedule)},
        {"otter_sampler", result.sampler},
        {"otter_unet_evaluations", std::to_string(result.evaluations)},
        {"otter_unet_rows", std::to_string(result.unet_rows)},
        {"otter_unet_rows_perturbed", std::to_string(result.perturbed_rows)},
        {"otter_unet_rows_saved", std::to_string(full_rows - result.unet_rows)},
        {"otter_unet_rows_cfg", std::to_string(2 * images_rows)},
    };
    write_safetensors(a.save_latents, {{"init_noise", result.init_noise}, {"final_latents", result.final_latents}},
                      metadata);
    log(a.quiet, "otter: wrote " + a.save_latents);
  }
  std::vector<std::pair<std::string, std::string>> extra{{"Precision", precision_name(precision)}};
  if (init_picture) extra.emplace_back("Init image", std::filesystem::path(a.init_image).filename().string());
  if (init_mask) {
    extra.emplace_back("Mask", std::filesystem::path(a.mask).filename().string());
    if (a.mask_invert) extra.emplace_back("Mask mode", "Inpaint not masked");
  }
  if (!load.loras.empty()) extra.emplace_back("LoRA", describe_loras(load.loras));
  for (const auto& path : save_images(a.output, request, result, model->files().name, extra))
    std::cout << path.string() << "\n";
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate images from a text prompt with classifier-free guidance");
  cmd->add_option("-m,--model", a->model,
                  "Diffusers folder or single-file .safetensors checkpoint (default: the bundled otter-shapes model)");
  // One value per flag: CLI11 would otherwise split "[a, b]" as a list, eating the webui's
  // [de-emphasis] brackets, and read the words after -p as more prompts.
  cmd->add_option("-p,--prompt", a->prompts, "Prompt; repeat for several prompts in one batch (required unless --from)")
      ->allow_extra_args(false);
  cmd->add_option("--from", a->from,
                  "A PNG from otter generate (or the webui): its parameters are the defaults of every option not "
                  "given, so the same command reproduces the image or varies what you give");
  cmd->add_option("-n,--negative", a->negatives,
                  "Negative prompt: the baseline guidance moves away from (default: the empty prompt); one for "
                  "all prompts or one per prompt")
      ->allow_extra_args(false);
  cmd->add_option("--cfg-scale", a->cfg_scale, "Guidance scale s in eps = uncond + s*(cond - uncond)")
      ->capture_default_str();
  cmd->add_option("--guidance", a->guidance,
                  "A guider instead of classic CFG: METHOD[:NAME=VALUE,...][;interval=LO..HI][;adaptive=GAMMA] with "
                  "METHOD cfg, cfg_zero_star, apg, tcfg, mambo, apg_mix, fdg, cfg_pp, pag, seg, slg, autoguidance (or "
                  "diffusers' class name) and diffusers' parameters, e.g. apg:scale=7.5,eta=0 or pag:layers=mid");
  cmd->add_option("--cfg-schedule", a->cfg_schedule,
                  "Scale per step: linear:START:END, cosine:START:END or list:S1,S2,... (overrides --cfg-scale)");
  cmd->add_option("--rescale", a->rescale, "Guidance rescale phi in [0, 1] (for v-prediction models; 0 = off)")
      ->capture_default_str();
  cmd->add_option("--cfg-batch", a->cfg_batch,
                  "batched: one UNet call on [uncond, cond]; split: two calls (less memory, same result)")
      ->capture_default_str();
  cmd->add_option("--init-image", a->init_image,
                  "Image to image: start from this PNG (encoded by the VAE, noised to the step --strength selects)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--strength", a->strength,
                  "With --init-image: the part of the schedule that runs, in (0, 1]; 1 repaints everything")
      ->capture_default_str();
  cmd->add_option("--mask", a->mask,
                  "Inpainting: a PNG of the --init-image's size, white = repaint (grey >= 128), black = keep")
      ->check(CLI::ExistingFile);
  cmd->add_option("--mask-blur", a->mask_blur,
                  "With --mask: the Gaussian (pixels) that softens the mask's edge where the result meets the input")
      ->capture_default_str();
  cmd->add_flag("--mask-invert", a->mask_invert, "With --mask: repaint the black part, keep the white");
  cmd->add_flag("--resize", a->resize, "With --init-image: resample the picture to -W x -H (Lanczos) instead of refusing another size");
  cmd->add_option("--lora", a->loras,
                  "A LoRA (.safetensors, kohya or diffusers/PEFT layout) merged into the weights: FILE or FILE:WEIGHT "
                  "(default 1); repeat for several")
      ->allow_extra_args(false);
  cmd->add_flag("--lora-unmerged", a->lora_unmerged,
                "Keep each LoRA apart from the weights: every layer adds its low-rank update at run time (no merged "
                "copies of the weights; a little more compute)");
  cmd->add_flag("--lora-lenient", a->lora_lenient,
                "Apply a LoRA's layers that the model has and warn about the others (default: refuse the LoRA)");
  cmd->add_option("--steps", a->steps, "Denoising steps")->capture_default_str()->check(CLI::Range(1, kMaxSteps));
  cmd->add_option("--sampler", a->sampler,
                  "pndm lms ddim ddpm euler euler_a heun dpmpp_2m dpmpp_2m_karras unipc (default: the model's own)");
  cmd->add_option("--eta", a->eta, "DDIM eta (0 = deterministic)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of torch's CPU generator (same seed = same noise as diffusers); -1 draws a random one, recorded in the PNG")
      ->capture_default_str();
  cmd->add_option("-W,--width", a->width, "Image width, a multiple of 8 (default: the model's native size)")
      ->check(CLI::Range(8, kMaxSide));
  cmd->add_option("-H,--height", a->height, "Image height, a multiple of 8 (default: the model's native size)")
      ->check(CLI::Range(8, kMaxSide));
  cmd->add_option("--images", a->images, cat("Images per prompt (prompts x images at most ", kMaxImages, ")"))
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxImages));
  cmd->add_option("--max-batch", a->max_batch,
                  "Images denoised and decoded together, at most; more run in turns, same images (default: all at "
                  "once, or the most that fit in memory)")
      ->check(CLI::Range(1, kMaxImages));
  cmd->add_option("--memory-limit", a->memory_limit,
                  "GB this run may use (default: what the system and its cgroup leave, minus a margin); the memory "
                  "plan refuses runs estimated above it")
      ->check(CLI::Range(0.001, 1e6));
  cmd->add_option("-o,--output", a->output, "Output PNG; several images become NAME-0.png, NAME-1.png, ...")
      ->capture_default_str();
  cmd->add_option("--save-latents", a->save_latents, "Also write init_noise and final_latents (f32) to this .safetensors");
  cmd->add_flag("-q,--quiet", a->quiet, "No progress or log on stderr");
  cmd->add_option("--threads", a->threads, "CPU threads (default: one per physical core, or OMP_NUM_THREADS); a thread done early spins 1000 times, then sleeps (OMP_WAIT_POLICY or GOMP_SPINCOUNT overrides)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--precision", a->precision,
                  "Compute precision: f32, bf16, f16 or auto (the 16-bit path this CPU runs faster than f32, measured: bf16 on AVX-512 BF16, f16 on AVX-512 FP16, f16 weights with f32 arithmetic on AVX2 + F16C; else f32)")->capture_default_str();
  cmd->add_option("--config", a->config, "Diffusers folder or config.json files describing a single-file checkpoint");
  cmd->add_option("--prediction", a->prediction, "Override the prediction type: eps or v");
  cmd->add_option("--variant", a->variant, "Diffusers weight variant to load, e.g. fp16");
  cmd->add_option("--tokenizer", a->tokenizer, "Folder with the CLIP vocab.json and merges.txt");
  cmd->add_option("--long-prompt", a->long_prompt,
                  "Prompts over 75 tokens: truncate (diffusers) or chunk (75-token windows, webui)")
      ->capture_default_str();
  cmd->add_option("--emphasis", a->emphasis,
                  "Prompt weighting, the webui's syntax: original ((word:1.3), [word], BREAK; mean restored) or none "
                  "(brackets are plain text)")
      ->capture_default_str();
  cmd->add_option("--clip-skip", a->clip_skip, "Use the text encoder's N-th layer from the end (1 = last)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_flag("--vae-tile", a->vae_tile, "Decode the image in overlapping tiles (less memory)");
  cmd->add_option("--vae-memory-limit", a->vae_memory_limit,
                  "Decode in tiles automatically when the VAE would need more than this many GB")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 1e6));
  cmd->add_option("--rng", a->rng, "Noise generator: cpu (torch's CPU generator)")->capture_default_str();
  cmd->callback([a, cmd] {
    if (!a->from.empty())
      apply_png_parameters(*a, [cmd](const std::string& name) { return cmd->get_option("--" + name)->count() > 0; });
    OTTER_CHECK(!a->prompts.empty(), "give a prompt with -p (or an image to start from with --from)");
    run_generate(*a);
  });
}

}  // namespace otter::cli

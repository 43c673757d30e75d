// `otter lab`: what guidance does, from one noise — every experiment of guidance/lab_experiments.h
// run together (one UNet call per step over all of them, shared rows once), each final image
// written as a PNG with its `otter generate` parameters, and every number in lab.json.
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "commands.h"
#include "core/error.h"
#include "core/stopwatch.h"
#include "io/atomic_file.h"
#include "io/png.h"
#include "pipeline/default_model.h"
#include "pipeline/image_output.h"
#include "pipeline/lab.h"
#include "pipeline/lab_report.h"
#include "pipeline/latent_preview.h"
#include "pipeline/txt2img.h"

namespace otter::cli {
namespace {

struct LabArgs {
  std::string model, prompt, negative = "solar system with 9 planets", output = "lab", sampler, precision = "auto";
  std::string experiments;
  std::vector<float> scales{15.0f};
  float cfg_scale = 7.5f;
  int64_t seed = 0;  // -1: random
  int steps = 20, width = 0, height = 0, threads = 0;
  std::string decode_steps;  // "" (five spread), "all", or 1-based steps "1,5,10"
  std::vector<std::string> guidance;
  bool quiet = false, no_previews = false;
};

std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : list + ",") {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  return out;
}

nlohmann::json step_json(const LabStep& s) {
  return {{"timestep", s.timestep}, {"sigma", s.sigma}, {"scale", s.scale}, {"norm_cond", s.norm_cond},
          {"norm_uncond", s.norm_uncond}, {"norm_delta", s.norm_delta}, {"norm_guided", s.norm_guided},
          {"cosine_cond_uncond", s.cosine}};
}

// The evaluations the filmstrips show: "all", the 1-based steps given, or five spread from first to last.
std::vector<int> filmstrip_steps(const std::string& given, int evaluations) {
  std::vector<int> out;
  if (given == "all") {
    for (int k = 0; k < evaluations; ++k) out.push_back(k);
    return out;
  }
  if (!given.empty()) {
    for (const std::string& item : split_names(given)) {
      int s = 0;
      try {
        size_t used = 0;
        s = std::stoi(item, &used);
        OTTER_CHECK(used == item.size(), "");
      } catch (const std::exception&) {
        throw Error(cat("--decode-steps: '", item, "' is not a step number; give steps like 1,10,20 or all"));
      }
      OTTER_CHECK(s >= 1 && s <= evaluations, "--decode-steps: step ", s, " is not in 1..", evaluations);
      out.push_back(s - 1);
    }
    return out;
  }
  const int n = std::min(5, evaluations);
  for (int i = 0; i < n; ++i) out.push_back(n == 1 ? evaluations - 1 : i * (evaluations - 1) / (n - 1));
  return out;
}

void run_lab_command(const LabArgs& a) {
  const Precision precision = parse_precision(a.precision);
  LabSettings settings;
  settings.cfg_scale = a.cfg_scale;
  settings.negative = a.negative;
  settings.scales = a.scales;
  settings.only = split_names(a.experiments);
  settings.guidance = a.guidance;
  LabRequest request;
  request.prompt = a.prompt;
  request.experiments = lab_experiments(settings);
  request.steps = a.steps;
  request.sampler = a.sampler;
  request.seed = resolve_seed(a.seed, a.quiet);
  // A malformed --decode-steps fails before any work (its range is checked once the steps are known).
  if (a.decode_steps != "all") (void)filmstrip_steps(a.decode_steps, std::numeric_limits<int>::max());
  const std::filesystem::path dir(a.output);
  std::filesystem::create_directories(dir);
  check_output_writable(dir / "lab.json");

  const std::filesystem::path model_path = a.model.empty() ? find_default_model() : std::filesystem::path(a.model);
  auto backend = make_cpu_backend(precision, a.threads);
  auto model = StableDiffusion::load(model_path, *backend);
  const int native = model->files().configs.unet.value("sample_size", 64) * 8;
  request.width = a.width ? a.width : native;
  request.height = a.height ? a.height : native;
  log(a.quiet, cat("otter: lab: ", request.experiments.size(), " experiments from one noise (seed ", request.seed, "), ",
                   a.steps, " steps, ", request.width, "x", request.height, ", ", model->files().name, " (",
                   backend->name(), ")"));

  const LabResult result = run_lab(*model, request, [&](int k, int n, int64_t rows) {
    if (!a.quiet) std::fprintf(stderr, "step %3d/%d: one UNet call, %lld rows\n", k + 1, n, static_cast<long long>(rows));
  });
  const uint64_t alone = [&] {  // what running each experiment as otter generate would take
    uint64_t rows = 0;
    for (const LabExperiment& e : request.experiments) {
      Txt2ImgRequest r;
      r.steps = a.steps;
      r.sampler = result.sampler;
      r.guidance.schedule = e.schedule;
      r.guider = e.guider;
      rows += planned_unet_rows(r, model->scheduler_config()).rows;
    }
    return rows;
  }();
  log(a.quiet, cat("otter: lab: ", result.unet_rows, " UNet rows in ", result.experiments[0].steps.size(),
                   " calls (", result.rows_asked - result.unet_rows, " shared rows computed once; otter generate "
                   "would take ", alone, " for the same images",
                   result.unet_rows > alone ? ": the lab also evaluates the uncond rows of scale-1 steps, for its "
                                              "statistics"
                                            : "",
                   "); text ", result.seconds_text, " s, denoise ",
                   result.seconds_denoise, " s, decode ", result.seconds_decode, " s"));

  // The cheap preview map (read from its cache beside the model, or fitted once now).
  std::optional<LatentPreview> map;
  if (!a.no_previews) map = latent_preview_for(*model, [&](const std::string& line) { log(a.quiet, "otter: lab: " + line); });
  nlohmann::json report = {{"prompt", a.prompt}, {"seed", request.seed}, {"steps", a.steps}, {"sampler", result.sampler},
                           {"width", request.width}, {"height", request.height}, {"model", model->files().name},
                           {"precision", precision_name(precision)}, {"unet_rows", result.unet_rows},
                           {"rows_asked", result.rows_asked}, {"rows_one_by_one", alone},
                           {"seconds", {{"text", result.seconds_text}, {"denoise", result.seconds_denoise},
                                        {"decode", result.seconds_decode}}}};
  if (map)
    report["preview_map"] = {{"map", map->map.to_json()}, {"file", map->file.string()},
                             {"held_out_mean_abs_error", map->held_out.mean_abs},
                             {"held_out_p99_abs_error", map->held_out.p99_abs}};
  for (size_t e = 0; e < request.experiments.size(); ++e) {
    const LabExperiment& x = request.experiments[e];
    const auto [same, r] = lab_as_generate(request, result, e);
    const auto png = save_images(dir / lab_image_name(x.name), same, r, model->files().name,
                                 {{"Precision", precision_name(precision)}});
    nlohmann::json steps = nlohmann::json::array();
    for (const LabStep& s : result.experiments[e].steps) steps.push_back(step_json(s));
    report["experiments"].push_back({{"name", x.name}, {"caption", x.caption}, {"image", lab_image_name(x.name)},
                                     {"generate_options", x.generate_options()}, {"negative", x.negative},
                                     {"schedule", x.schedule.describe()}, {"steps", steps}});
    std::cout << png[0].string() << "\n";
  }
  write_file_atomically(dir / "lab.json", report.dump(1) + "\n");
  std::cout << (dir / "lab.json").string() << "\n";

  // The report: x̂0 of each branch at every step through the cheap latent->RGB map, and decoded by
  // the real VAE at the chosen steps.
  const auto t_report = std::chrono::steady_clock::now();
  LabReportInput in;
  in.request = &request;
  in.result = &result;
  in.model_name = model->files().name;
  in.precision = precision_name(precision);
  const int evaluations = static_cast<int>(result.experiments[0].steps.size());
  in.decode_steps = filmstrip_steps(a.decode_steps, evaluations);
  if (map) {
    std::ostringstream note;
    note.precision(3);
    note << "pictures from a linear latent->RGB map (no VAE call; mean error " << map->held_out.mean_abs
         << " levels of 255 against this VAE's decodes of held-out pictures)";
    in.preview_note = note.str();
  }
  size_t previews = 0;
  for (const LabExperimentResult& r : result.experiments) {
    in.previews.emplace_back();
    in.decoded.emplace_back();
    if (a.no_previews) continue;
    if (map) {
      const int64_t side = std::max(r.steps[0].x0_cond.dim(1), r.steps[0].x0_cond.dim(2));
      const int scale = static_cast<int>(std::clamp<int64_t>(32 / side, 1, model->vae().config().downscale_factor()));
      for (const LabStep& s : r.steps) {
        in.previews.back().push_back(
            {map->map.preview(s.x0_cond, scale), map->map.preview(s.x0_uncond, scale), map->map.preview(s.x0_guided, scale)});
        previews += 3;
      }
    }
    for (int k : in.decode_steps) {
      const LabStep& s = r.steps[static_cast<size_t>(k)];
      std::array<Tensor, 3> pictures;
      const Tensor* x0[3] = {&s.x0_cond, &s.x0_uncond, &s.x0_guided};
      for (int b = 0; b < 3; ++b) {
        const Tensor z = x0[b]->reshape(Shape{1, x0[b]->dim(0), x0[b]->dim(1), x0[b]->dim(2)});
        pictures[static_cast<size_t>(b)] = to_uint8_image(model->vae().decode(*backend, z)).squeeze_front();
      }
      in.decoded.back().push_back(pictures);
    }
  }
  write_file_atomically(dir / "index.html", lab_report_html(in));
  // The contact sheet: the final images side by side, in the report's (and lab.json's) order.
  {
    const int64_t H = request.height, W = request.width, gap = 4, n = static_cast<int64_t>(result.experiments.size());
    const int64_t sheet_w = n * W + (n + 1) * gap, sheet_h = H + 2 * gap;
    std::vector<uint8_t> sheet(static_cast<size_t>(sheet_w * sheet_h * 3), 255);
    for (int64_t e = 0; e < n; ++e) {
      const uint8_t* px = result.experiments[static_cast<size_t>(e)].image.data<uint8_t>();
      for (int64_t y = 0; y < H; ++y)
        std::copy(px + y * W * 3, px + (y + 1) * W * 3,
                  sheet.begin() + ((y + gap) * sheet_w + gap + e * (W + gap)) * 3);
    }
    std::string order;
    for (const LabExperiment& x : request.experiments) order += (order.empty() ? "" : ", ") + x.name;
    write_png(dir / "contact_sheet.png", sheet.data(), static_cast<int>(sheet_w), static_cast<int>(sheet_h),
              {{"Description", "otter lab: " + order + " (left to right); prompt: " + a.prompt}});
  }
  std::cout << (dir / "contact_sheet.png").string() << "\n";
  log(a.quiet, cat("otter: lab: report with ", previews, " latent->RGB previews and ",
                   a.no_previews ? 0 : 3 * in.decode_steps.size() * result.experiments.size(), " VAE decodes (",
                   in.decode_steps.size(), " steps) in ",
                   seconds_since(t_report), " s"));
  std::cout << (dir / "index.html").string() << "\n";
}

}  // namespace

void add_lab_command(CLI::App& app) {
  auto a = std::make_shared<LabArgs>();
  CLI::App* cmd = app.add_subcommand("lab", "See what guidance does: every experiment from one noise, in one batched pass");
  cmd->add_option("-p,--prompt", a->prompt, "Prompt")->required();
  cmd->add_option("-n,--negative", a->negative, "The negative experiment's baseline text")->capture_default_str();
  cmd->add_option("-m,--model", a->model, "Model (default: the bundled otter-shapes)");
  cmd->add_option("-o,--output", a->output, "Report folder")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the one initial noise (-1: a random one)")->capture_default_str();
  cmd->add_option("--steps", a->steps, "Denoising steps")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_option("--cfg-scale", a->cfg_scale, "The scale of cfg, negative, reversed and scheduled")->capture_default_str();
  cmd->add_option("--scales", a->scales, "The scale sweep (scales already run by a named experiment are not repeated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--experiments", a->experiments,
                  "Comma-separated names to run (default all: cond, uncond, cfg, negative, reversed, scheduled, "
                  "scale X for each sweep scale)");
  cmd->add_option("--guidance", a->guidance,
                  "Also run this guider recipe as an experiment, as otter generate --guidance runs it (repeatable; "
                  "perturbed guiders included)");
  cmd->add_option("--sampler", a->sampler, "Sampler (default: the model's own)");
  cmd->add_option("--decode-steps", a->decode_steps,
                  "Steps (1-based, e.g. 1,10,20, or all) whose predicted clean images are also decoded by the VAE "
                  "(default: 5 spread from first to last; every step has the cheap latent->RGB preview)");
  cmd->add_option("-W,--width", a->width, "Image width (default: the model's native size)")->check(CLI::Range(8, 16384));
  cmd->add_option("-H,--height", a->height, "Image height")->check(CLI::Range(8, 16384));
  cmd->add_option("--precision", a->precision, "f32, bf16, f16 or auto")->capture_default_str();
  cmd->add_option("--threads", a->threads, "CPU threads")->check(CLI::Range(0, 1024));
  cmd->add_flag("--no-previews", a->no_previews,
                "No pictures of the predicted clean images (neither previews nor VAE decodes): the filmstrips show "
                "the difference heat maps only");
  cmd->add_flag("-q,--quiet", a->quiet, "No progress or log on stderr");
  cmd->callback([a] { run_lab_command(*a); });
}

}  // namespace otter::cli

#include "pipeline/lab.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <array>
#include <map>
#include <optional>

#include "core/error.h"
#include "core/stopwatch.h"
#include "guidance/guider.h"
#include "guidance/guider_prediction.h"
#include "guidance/noise_prediction.h"
#include "models/vae_tiling.h"
#include "pipeline/txt2img.h"
#include "sampling/sampler_common.h"
#include "sampling/torch_cpu_generator.h"

namespace otter {
namespace {

double norm(const Tensor& t) {
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += static_cast<double>(t.f32()[i]) * t.f32()[i];
  return std::sqrt(s);
}

Tensor difference(const Tensor& a, const Tensor& b) {
  Tensor d = Tensor::empty(a.shape(), DType::F32);
  for (int64_t i = 0; i < a.numel(); ++i) d.f32()[i] = a.f32()[i] - b.f32()[i];
  return d;
}

// One row the UNet evaluates: text `text` on the latents of experiment `latents_of`, with the
// perturbation of experiment `perturbed_by` (-1: none; such rows are never shared).
struct Row {
  int text;
  int latents_of;
  int perturbed_by = -1;
};

}  // namespace

LabResult run_lab(StableDiffusion& model, const LabRequest& request, const LabProgress& progress) {
  OTTER_CHECK(!request.experiments.empty(), "otter lab: no experiments");
  Backend& be = model.backend();
  LabResult result;
  const SchedulerConfig& scheduler = model.scheduler_config();
  result.sampler = request.sampler.empty() ? default_sampler_for(scheduler) : request.sampler;
  for (const LabExperiment& e : request.experiments) e.schedule.validate(request.steps);

  // Texts: the prompt, then each distinct baseline, each encoded alone as otter generate does;
  // padded to the same windows.
  auto t0 = SteadyClock::now();
  std::vector<std::string> texts{request.prompt};
  std::vector<int> baseline_of;
  for (const LabExperiment& e : request.experiments) {
    auto it = std::find(texts.begin() + 1, texts.end(), e.negative);
    if (it == texts.end()) it = texts.insert(texts.end(), e.negative);
    baseline_of.push_back(static_cast<int>(it - texts.begin()));
  }
  std::vector<Tensor> states;
  int64_t windows = 1;
  for (const std::string& t : texts) {
    states.push_back(model.encode_prompts({t}, request.text));
    windows = std::max(windows, states.back().dim(1) / kClipContextLength);
  }
  for (Tensor& s : states) s = model.pad_to_windows(s, windows, request.text);
  result.seconds_text = seconds_since(t0);

  // One noise for every experiment: the seed's draw, as otter generate makes it.
  const int64_t h = request.height / 8, w = request.width / 8, C = model.unet().config().in_channels;
  TorchCpuGenerator rng(request.seed);
  result.init_noise = Tensor::empty(Shape{1, C, h, w}, DType::F32);
  rng.randn(result.init_noise.f32(), static_cast<size_t>(result.init_noise.numel()));

  const size_t E = request.experiments.size();
  std::vector<std::unique_ptr<Sampler>> samplers;
  std::vector<TorchCpuGenerator> noises(E, rng);  // each experiment's ancestral noise: generate's draws
  std::vector<Tensor> latents;
  result.experiments.resize(E);
  for (size_t e = 0; e < E; ++e) {
    samplers.push_back(make_sampler(result.sampler, scheduler));
    samplers.back()->set_timesteps(request.steps);
    Tensor l = result.init_noise.clone();
    const float sigma0 = samplers.back()->init_noise_sigma();
    for (int64_t i = 0; i < l.numel(); ++i) l.f32()[i] *= sigma0;
    latents.push_back(l);
  }
  // Guider experiments keep their own guider (state such as APG's momentum is per experiment), and
  // the perturbed ones their perturbation (PAG, SEG, SLG: a third row; auto-guidance: its uncond row).
  std::vector<std::unique_ptr<Guider>> guiders;
  std::vector<std::optional<RowPerturbation>> perturbations;
  std::vector<bool> perturbs_uncond;
  for (const LabExperiment& e : request.experiments) {
    guiders.push_back(e.guider ? e.guider->make() : nullptr);
    perturbations.push_back(guiders.back() ? resolve_perturbation(*guiders.back(), model.unet().transformer_block_names())
                                           : std::nullopt);
    perturbs_uncond.push_back(perturbations.back() && guiders.back()->perturbation()->on_uncond);
    if (guiders.back()) {
      check_guider_fits(*guiders.back(), *samplers[0], h, w);
      guiders.back()->reset();
    }
  }
  const std::vector<Evaluation> plan = plan_evaluations(*samplers[0], request.steps);
  const PredictionType prediction = samplers[0]->prediction_type();

  t0 = SteadyClock::now();
  for (size_t k = 0; k < plan.size(); ++k) {
    // Each experiment's model input, and its two rows; identical rows are evaluated once.
    std::vector<Tensor> inputs;
    for (size_t e = 0; e < E; ++e) {
      Tensor x = latents[e].clone();
      samplers[e]->scale_model_input(x, static_cast<int>(k));
      inputs.push_back(x);
    }
    std::vector<Row> rows;
    std::vector<std::array<int, 3>> rows_of(E, {-1, -1, -1});  // (uncond, cond, perturbed) rows
    const auto row_for = [&](int text, size_t e, bool perturbed) {
      if (!perturbed)
        for (size_t r = 0; r < rows.size(); ++r) {
          const Tensor& other = inputs[static_cast<size_t>(rows[r].latents_of)];
          if (rows[r].perturbed_by < 0 && rows[r].text == text &&
              std::memcmp(other.raw(), inputs[e].raw(), inputs[e].nbytes()) == 0)
            return static_cast<int>(r);
        }
      rows.push_back({text, static_cast<int>(e), perturbed ? static_cast<int>(e) : -1});
      return static_cast<int>(rows.size() - 1);
    };
    std::vector<Needs> needs(E);
    for (size_t e = 0; e < E; ++e) {
      if (guiders[e]) needs[e] = guiders[e]->needs(GuiderStep{plan[k].step, request.steps, plan[k].timestep, plan[k].sigma});
      rows_of[e][0] = row_for(baseline_of[e], e, perturbs_uncond[e]);
      rows_of[e][1] = row_for(0, e, false);
      if (needs[e].perturbed) rows_of[e][2] = row_for(0, e, true);
      result.rows_asked += 2 + needs[e].perturbed;
    }
    result.unet_rows += rows.size();
    // The perturbed rows' chain: each row its experiment's perturbation.
    std::vector<RowPerturbation> chain;
    for (size_t r = 0; r < rows.size(); ++r)
      if (rows[r].perturbed_by >= 0) {
        RowPerturbation p = *perturbations[static_cast<size_t>(rows[r].perturbed_by)];
        p.row_begin = static_cast<int64_t>(r), p.row_end = static_cast<int64_t>(r) + 1;
        chain.push_back(p);
      }
    for (size_t i = 0; i + 1 < chain.size(); ++i) chain[i].next = &chain[i + 1];

    // One UNet call on every row (uncond rows are not forced first: each row is independent).
    Tensor x_all = Tensor::empty(Shape{static_cast<int64_t>(rows.size()), C, h, w}, DType::F32);
    Tensor ctx_all;
    for (size_t r = 0; r < rows.size(); ++r) {
      x_all.slice(0, static_cast<int64_t>(r), static_cast<int64_t>(r) + 1).copy_from(inputs[static_cast<size_t>(rows[r].latents_of)]);
      const Tensor& text = states[static_cast<size_t>(rows[r].text)];
      ctx_all = ctx_all.defined() ? concat_rows(ctx_all, text) : text.contiguous().clone();
    }
    const Tensor out =
        model.unet().forward(be, x_all, plan[k].timestep, ctx_all, {}, chain.empty() ? nullptr : chain.data()).contiguous();

    for (size_t e = 0; e < E; ++e) {
      const Tensor u = out.slice(0, rows_of[e][0], rows_of[e][0] + 1).contiguous();
      const Tensor c = out.slice(0, rows_of[e][1], rows_of[e][1] + 1).contiguous();
      // A guider sees exactly what otter generate hands it: the uncond prediction only where it asks.
      Tensor eps;
      bool renoise = false;
      if (guiders[e]) {
        const GuiderStep gs{plan[k].step, request.steps, plan[k].timestep, plan[k].sigma};
        Predictions p;
        p.cond = c;
        if (needs[e].uncond) p.uncond = u;
        if (needs[e].perturbed) p.perturbed = out.slice(0, rows_of[e][2], rows_of[e][2] + 1).contiguous();
        renoise = guiders[e]->renoises_with_uncond() && p.uncond.defined();
        eps = guiders[e]->combine(gs, p);
      } else {
        eps = lab_guided(request.experiments[e], u, c, plan[k].step, request.steps);
      }
      LabStep s;
      s.timestep = plan[k].timestep;
      s.sigma = plan[k].sigma;
      s.scale = request.experiments[e].guider
                    ? static_cast<float>(request.experiments[e].guider->params.value("guidance_scale", NAN))
                    : request.experiments[e].schedule.at(plan[k].step, request.steps);
      s.delta = difference(c, u).squeeze_front();
      s.norm_cond = norm(c), s.norm_uncond = norm(u), s.norm_delta = norm(s.delta), s.norm_guided = norm(eps);
      double dot = 0;
      for (int64_t i = 0; i < c.numel(); ++i) dot += static_cast<double>(c.f32()[i]) * u.f32()[i];
      s.cosine = dot / (s.norm_cond * s.norm_uncond);
      s.x0_cond = predicted_clean(prediction, s.sigma, inputs[e], c).squeeze_front();
      s.x0_uncond = predicted_clean(prediction, s.sigma, inputs[e], u).squeeze_front();
      s.x0_guided = predicted_clean(prediction, s.sigma, inputs[e], eps).squeeze_front();
      result.experiments[e].steps.push_back(std::move(s));
      if (renoise)
        samplers[e]->step_cfg_pp(eps, u, static_cast<int>(k), latents[e], noises[e]);
      else
        samplers[e]->step(eps, static_cast<int>(k), latents[e], noises[e]);
    }
    if (progress) progress(static_cast<int>(k), static_cast<int>(plan.size()), static_cast<int64_t>(rows.size()));
  }
  result.seconds_denoise = seconds_since(t0);

  for (size_t e = 0; e < E; ++e) result.experiments[e].final_latents = latents[e];
  if (request.decode) {
    t0 = SteadyClock::now();
    be.release_cached_memory();
    for (size_t e = 0; e < E; ++e) {
      // As otter generate decides: tiles when the whole decode would need more than 2 GB.
      const bool tiled = estimated_decode_bytes(model.vae(), latents[e]) > 2e9;
      result.experiments[e].image = to_uint8_image(tiled ? decode_tiled(model.vae(), be, latents[e], VaeTiling{})
                                                         : model.vae().decode(be, latents[e]));
    }
    result.seconds_decode = seconds_since(t0);
  }
  return result;
}

std::pair<Txt2ImgRequest, Txt2ImgResult> lab_as_generate(const LabRequest& request, const LabResult& result, size_t e) {
  const LabExperiment& x = request.experiments.at(e);
  Txt2ImgRequest same;
  same.prompts = {request.prompt};
  if (!x.negative.empty()) same.negative_prompts = {x.negative};
  same.steps = request.steps;
  same.seed = request.seed;
  same.width = request.width;
  same.height = request.height;
  same.text = request.text;
  same.guidance.schedule = x.schedule;
  same.guider = x.guider;
  Txt2ImgResult r;
  r.sampler = result.sampler;
  r.image = result.experiments.at(e).image;
  r.final_latents = result.experiments.at(e).final_latents;
  return {std::move(same), std::move(r)};
}

}  // namespace otter

#pragma once
// One interface for every sampler (diffusers calls them schedulers), one file per sampler.
//
// A sampler turns UNet outputs into the next latents. The loop that drives it:
//
//   sampler->set_timesteps(steps);
//   latents = noise(seed) * sampler->init_noise_sigma();
//   for (int k = 0; k < sampler->num_evaluations(); ++k) {
//     x = latents; sampler->scale_model_input(x, k);       // the UNet's input
//     e = unet(x, sampler->timesteps()[k], text) (+ guidance);
//     sampler->step(e, k, latents, noise);                 // latents advance in place
//   }
//
// Every sampler reproduces the diffusers 0.30.3 class of the same name step for step, in
// float32 with diffusers' order of operations, so that latents match diffusers' to rounding.
// Converting the UNet's prediction (epsilon, v or sample) into what the update needs is the
// sampler's job, as in diffusers.
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "sampling/noise.h"
#include "sampling/scheduler_config.h"

namespace otter {

struct SamplerOptions {
  // DDIM's eta: 0 is deterministic DDIM, 1 gives DDPM's variance. Only DDIM takes it.
  double eta = 0.0;
  // Overrides the config's use_karras_sigmas (samplers with sigma schedules only).
  std::optional<bool> use_karras_sigmas;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  virtual std::string name() const = 0;  // "euler_a", ...
  // The effective diffusers settings the sampler runs with.
  const SchedulerConfig& config() const { return config_; }
  PredictionType prediction_type() const { return config_.prediction_type; }

  // Chooses the inference timesteps and resets all multistep state; call before each image.
  virtual void set_timesteps(int num_inference_steps) = 0;
  // One entry per UNet evaluation (Heun: 2n-1), as the UNet receives them; fractional for some
  // samplers. Empty before set_timesteps().
  const std::vector<float>& timesteps() const { return timesteps_; }
  int num_evaluations() const { return static_cast<int>(timesteps_.size()); }
  // The k-diffusion sigmas, one per evaluation plus the final one; empty for samplers that
  // work with alphas (PNDM, DDIM, DDPM).
  const std::vector<float>& sigmas() const { return sigmas_; }
  // Standard deviation of the initial noise: latents = randn * init_noise_sigma().
  virtual float init_noise_sigma() const { return 1.0f; }
  // diffusers' `order`: timesteps() entries per inference step (Heun 2, the others 1).
  virtual int order() const { return 1; }

  // Image to image starts part-way (diffusers' set_begin_index): the next step() is evaluation
  // `index`, with the multistep state as fresh as after set_timesteps (as in diffusers).
  void set_begin_index(int index);
  // out = `original` (clean latents) noised with `noise` to the level of evaluation `index`, as the
  // diffusers class's add_noise does at the begin index: sqrt(ᾱ_t)·x + sqrt(1−ᾱ_t)·n for the alpha
  // samplers (DDIM, DDPM, PNDM), x + σ·n for the sigma ones (Euler, Euler a, Heun, LMS),
  // α_σ·x + σ_σ·n for DPM-Solver and UniPC. float32, diffusers' order of operations.
  void add_noise(std::span<const float> original, std::span<const float> noise, int index, std::span<float> out) const;

  // Scales x in place into the UNet's input for evaluation `index` (identity for most samplers;
  // x / sqrt(sigma^2 + 1) for the sigma-space ones). x may hold any number of batch rows.
  void scale_model_input(std::span<float> x, int index) const;
  void scale_model_input(Tensor& x, int index) const;

  // Advances `sample` in place given the (guided) model output of evaluation `index`.
  // Evaluations must be stepped in order 0, 1, ...; stochastic samplers draw their noise from
  // `noise` in diffusers' order, one randn call of sample.size() values per draw.
  void step(std::span<const float> model_output, int index, std::span<float> sample, NoiseGenerator& noise);
  void step(const Tensor& model_output, int index, Tensor& sample, NoiseGenerator& noise);

  // CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance"): the step's
  // denoised estimate x0 comes from `model_output` (the guided prediction), the direction back to
  // the next noise level from `renoise_output` (the unconditional one), keeping the sample on the
  // data manifold. Only samplers whose update is "x0 plus a noise direction" have it (euler, ddim);
  // the others throw. Noise is drawn as in step().
  virtual bool supports_cfg_pp() const { return false; }
  void step_cfg_pp(const Tensor& model_output, const Tensor& renoise_output, int index, Tensor& sample,
                   NoiseGenerator& noise);

 protected:
  explicit Sampler(SchedulerConfig config) : config_(std::move(config)) {}

  virtual void do_scale_model_input(std::span<float> x, int index) const;
  // The sigma form x + σ_index·n; the alpha-space and multistep samplers override it.
  virtual void do_add_noise(std::span<const float> original, std::span<const float> noise, int index,
                            std::span<float> out) const;
  virtual void do_step(std::span<const float> model_output, int index, std::span<float> sample,
                       NoiseGenerator& noise) = 0;
  virtual void do_step_cfg_pp(std::span<const float> model_output, std::span<const float> renoise_output, int index,
                              std::span<float> sample, NoiseGenerator& noise);
  // For set_timesteps(): installs the new schedule and restarts the step counter.
  void reset_schedule(std::vector<float> timesteps, std::vector<float> sigmas);

  SchedulerConfig config_;

 private:
  std::vector<float> timesteps_;
  std::vector<float> sigmas_;
  int next_step_ = 0;
};

// Sampler names, in the order `otter --help` lists them:
// pndm lms ddim ddpm euler euler_a heun dpmpp_2m dpmpp_2m_karras unipc.
const std::vector<std::string_view>& sampler_names();
// The diffusers class a sampler name stands for ("euler_a" -> "EulerAncestralDiscreteScheduler").
std::string_view diffusers_class_of(std::string_view sampler_name);

// Builds sampler `name` for a model whose scheduler config is `model_config`: the config is
// re-resolved for the sampler's diffusers class (as `Class.from_config(model_config)` does), then
// the settings the name implies are applied (dpmpp_2m: DPM-Solver++ order 2; dpmpp_2m_karras:
// also Karras sigmas). Throws otter::Error listing the names for an unknown one, and for options
// or settings the sampler does not support.
std::unique_ptr<Sampler> make_sampler(std::string_view name, const SchedulerConfig& model_config,
                                      const SamplerOptions& options = {});

// x̂0, the clean latent a prediction points to at k-diffusion level sigma, given the UNet input
// x_in (x_in·sqrt(σ²+1) is the latent in sigma space for every sampler: the sigma samplers scale
// their latents by 1/sqrt(σ²+1), the alpha ones hold sqrt(ᾱ)·x_sigma with σ² = (1−ᾱ)/ᾱ). What
// otter lab pictures and the server previews.
Tensor predicted_clean(PredictionType type, float sigma, const Tensor& x_in, const Tensor& prediction);

}  // namespace otter

#include "sampling/sampler.h"

#include <cmath>

#include "core/error.h"
#include "sampling/sampler_common.h"

namespace otter {

namespace {

std::span<float> f32_span(Tensor& t, const char* what) {
  OTTER_CHECK(t.defined() && t.dtype() == DType::F32 && t.is_contiguous(), "sampler: ", what,
              " must be a contiguous F32 tensor, got ", t.defined() ? t.describe() : std::string("an empty tensor"));
  return {t.f32(), static_cast<size_t>(t.numel())};
}

}  // namespace

void Sampler::reset_schedule(std::vector<float> timesteps, std::vector<float> sigmas) {
  timesteps_ = std::move(timesteps);
  sigmas_ = std::move(sigmas);
  next_step_ = 0;
}

void Sampler::do_scale_model_input(std::span<float>, int) const {}

void Sampler::set_begin_index(int index) {
  OTTER_CHECK(num_evaluations() > 0, name(), ": set_begin_index() before set_timesteps()");
  OTTER_CHECK(next_step_ == 0, name(), ": set_begin_index() after a step (call set_timesteps to start again)");
  OTTER_CHECK(index >= 0 && index < num_evaluations(), name(), ": begin index ", index, " is outside the schedule of ",
              num_evaluations(), " evaluations");
  next_step_ = index;
}

void Sampler::add_noise(std::span<const float> original, std::span<const float> noise, int index,
                        std::span<float> out) const {
  OTTER_CHECK(index >= 0 && index < num_evaluations(), name(), ": add_noise index ", index,
              " is outside the schedule of ", num_evaluations(), " evaluations (call set_timesteps first)");
  OTTER_CHECK(original.size() == noise.size() && out.size() == original.size(), name(), ": add_noise on ",
              original.size(), " values with ", noise.size(), " noise values into ", out.size());
  do_add_noise(original, noise, index, out);
}

void Sampler::do_add_noise(std::span<const float> original, std::span<const float> noise, int index,
                           std::span<float> out) const {
  const float sigma = sigmas()[static_cast<size_t>(index)];
  for (size_t i = 0; i < out.size(); ++i) {
    const float scaled = noise[i] * sigma;
    out[i] = original[i] + scaled;
  }
}

void Sampler::scale_model_input(std::span<float> x, int index) const {
  OTTER_CHECK(index >= 0 && index < num_evaluations(), name(), ": scale_model_input index ", index,
              " is outside the schedule of ", num_evaluations(), " evaluations (call set_timesteps first)");
  do_scale_model_input(x, index);
}

void Sampler::scale_model_input(Tensor& x, int index) const { scale_model_input(f32_span(x, "model input"), index); }

void Sampler::step(std::span<const float> model_output, int index, std::span<float> sample, NoiseGenerator& noise) {
  OTTER_CHECK(num_evaluations() > 0, name(), ": step() before set_timesteps()");
  OTTER_CHECK(index < num_evaluations(), name(), ": step ", index, " is past the last of ", num_evaluations(),
              " evaluations");
  OTTER_CHECK(index == next_step_, name(), ": step ", index, " called but the next step is ", next_step_,
              " (steps must run in order; call set_timesteps to start again)");
  OTTER_CHECK(model_output.size() == sample.size(), name(), ": model output has ", model_output.size(),
              " values but the sample has ", sample.size());
  do_step(model_output, index, sample, noise);
  ++next_step_;
}

void Sampler::do_step_cfg_pp(std::span<const float>, std::span<const float>, int, std::span<float>, NoiseGenerator&) {
  throw Error(cat("CFG++ needs a sampler whose step is a denoised estimate plus a noise direction: euler or ddim, not ",
                  name()));
}

void Sampler::step_cfg_pp(const Tensor& model_output, const Tensor& renoise_output, int index, Tensor& sample,
                          NoiseGenerator& noise) {
  OTTER_CHECK(supports_cfg_pp(), "CFG++ needs a sampler whose step is a denoised estimate plus a noise direction: "
                                 "euler or ddim, not ", name());
  OTTER_CHECK(model_output.shape() == sample.shape() && renoise_output.shape() == sample.shape(), name(),
              ": CFG++ predictions ", model_output.describe(), " and ", renoise_output.describe(), " for sample ",
              sample.describe());
  OTTER_CHECK(index == next_step_ && index < num_evaluations(), name(), ": step ", index, " called but the next step is ",
              next_step_);
  const Tensor g = model_output.contiguous().to(DType::F32), u = renoise_output.contiguous().to(DType::F32);
  do_step_cfg_pp(std::span<const float>(g.f32(), static_cast<size_t>(g.numel())),
                 std::span<const float>(u.f32(), static_cast<size_t>(u.numel())), index, f32_span(sample, "sample"), noise);
  ++next_step_;
}

void Sampler::step(const Tensor& model_output, int index, Tensor& sample, NoiseGenerator& noise) {
  OTTER_CHECK(model_output.shape() == sample.shape(), name(), ": model output ", model_output.describe(),
              " and sample ", sample.describe(), " differ in shape");
  Tensor out = model_output.contiguous();
  OTTER_CHECK(out.dtype() == DType::F32, name(), ": model output must be F32, got ", out.describe());
  step(std::span<const float>(out.f32(), static_cast<size_t>(out.numel())), index, f32_span(sample, "sample"), noise);
}

Tensor predicted_clean(PredictionType type, float sigma, const Tensor& x_in, const Tensor& prediction) {
  Tensor x_sigma = x_in.contiguous().clone();
  const float up = std::sqrt(sigma * sigma + 1.0f);
  for (int64_t i = 0; i < x_sigma.numel(); ++i) x_sigma.f32()[i] *= up;
  Tensor x0 = Tensor::empty(x_sigma.shape(), DType::F32);
  const Tensor p = prediction.contiguous();
  const auto n = static_cast<size_t>(x0.numel());
  detail::denoised_from_sigma(type, sigma, std::span<const float>(p.f32(), n), std::span<const float>(x_sigma.f32(), n),
                              std::span<float>(x0.f32(), n));
  return x0;
}

}  // namespace otter

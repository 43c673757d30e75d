#include "model_checks.h"

#include "core/error.h"
#include "model_registry.h"
#include "models/transformer_block_choice.h"
#include "sampling/sampler.h"

namespace otter::serve {
namespace {

[[noreturn]] void bad(const std::string& field, const std::string& message) { throw ApiError{400, message, field}; }

}  // namespace

void check_against_model(GenerationSpec& spec, const LoadedModel& model, const ModelFields& fields) {
  Txt2ImgRequest& r = spec.request;
  StableDiffusion& sd = *model.model;
  if (r.width == 0) r.width = model.native_size;
  if (r.height == 0) r.height = model.native_size;
  const int divisor = 8 * sd.unet().config().spatial_divisor();
  if (r.width % divisor) bad(fields.width, cat("width ", r.width, ": this model needs multiples of ", divisor));
  if (r.height % divisor) bad(fields.height, cat("height ", r.height, ": this model needs multiples of ", divisor));
  std::unique_ptr<Sampler> sampler;
  try {
    sampler = make_sampler(r.sampler.empty() ? default_sampler_for(sd.scheduler_config()) : r.sampler,
                           sd.scheduler_config(), r.sampler_options);
    sampler->set_timesteps(r.steps);
  } catch (const Error& e) {
    bad(fields.sampler, e.what());
  }
  if (r.guider) {
    try {
      const auto guider = r.guider->make();
      if (const std::optional<Perturbation> p = guider->perturbation())
        (void)choose_transformer_blocks(sd.unet().transformer_block_names(), p->layers);
      guider->check_latent_size(r.height / 8, r.width / 8);
      check_guider_fits(*guider, *sampler, r.height / 8, r.width / 8);
    } catch (const Error& e) {
      bad(fields.guidance, e.what());
    }
  }
}

}  // namespace otter::serve

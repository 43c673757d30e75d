// The sampler registry: names -> diffusers classes -> implementations.
#include <array>

#include "core/error.h"
#include "sampling/sampler_common.h"

namespace otter {

namespace {

struct Entry {
  std::string_view name;
  std::string_view diffusers_class;
  bool has_sigma_schedule;  // whether use_karras_sigmas means anything
};

constexpr std::array<Entry, 10> kSamplers = {{
    {"pndm", "PNDMScheduler", false},
    {"lms", "LMSDiscreteScheduler", true},
    {"ddim", "DDIMScheduler", false},
    {"ddpm", "DDPMScheduler", false},
    {"euler", "EulerDiscreteScheduler", true},
    {"euler_a", "EulerAncestralDiscreteScheduler", false},
    {"heun", "HeunDiscreteScheduler", true},
    {"dpmpp_2m", "DPMSolverMultistepScheduler", true},
    {"dpmpp_2m_karras", "DPMSolverMultistepScheduler", true},
    {"unipc", "UniPCMultistepScheduler", true},
}};

const Entry& entry(std::string_view name) {
  for (const Entry& e : kSamplers)
    if (e.name == name) return e;
  std::string known;
  for (const Entry& e : kSamplers) known += cat(known.empty() ? "" : ", ", e.name);
  throw Error(cat("unknown sampler '", name, "'; choose one of: ", known));
}

}  // namespace

const std::vector<std::string_view>& sampler_names() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> v;
    for (const Entry& e : kSamplers) v.push_back(e.name);
    return v;
  }();
  return names;
}

std::string_view diffusers_class_of(std::string_view name) { return entry(name).diffusers_class; }

std::unique_ptr<Sampler> make_sampler(std::string_view name, const SchedulerConfig& model_config,
                                      const SamplerOptions& options) {
  const Entry& e = entry(name);
  SchedulerConfig c = model_config.for_class(e.diffusers_class);

  OTTER_CHECK(options.eta == 0.0 || name == "ddim", "sampler '", name, "' has no eta (got eta = ", options.eta,
              "); eta only applies to ddim");
  if (options.use_karras_sigmas) {
    OTTER_CHECK(e.has_sigma_schedule, "sampler '", name, "' has no sigma schedule, so Karras sigmas do not apply");
    OTTER_CHECK(name != "dpmpp_2m_karras" || *options.use_karras_sigmas,
                "sampler 'dpmpp_2m_karras' always uses Karras sigmas; use 'dpmpp_2m' for the plain schedule");
    c.use_karras_sigmas = *options.use_karras_sigmas;
  }

  if (name == "pndm") return detail::make_pndm_sampler(std::move(c));
  if (name == "lms") return detail::make_lms_sampler(std::move(c));
  if (name == "ddim") return detail::make_ddim_sampler(std::move(c), options.eta);
  if (name == "ddpm") return detail::make_ddpm_sampler(std::move(c));
  if (name == "euler") return detail::make_euler_sampler(std::move(c));
  if (name == "euler_a") return detail::make_euler_ancestral_sampler(std::move(c));
  if (name == "heun") return detail::make_heun_sampler(std::move(c));
  if (name == "unipc") return detail::make_unipc_sampler(std::move(c));
  // "DPM++ 2M" names the solver: data prediction, second order, whatever the model's file says.
  c.algorithm_type = "dpmsolver++";
  c.solver_order = 2;
  if (name == "dpmpp_2m_karras") c.use_karras_sigmas = true;
  else if (!options.use_karras_sigmas) c.use_karras_sigmas = false;
  return detail::make_dpmpp_2m_sampler(std::move(c), std::string(name));
}

}  // namespace otter

#include "sampling/scheduler_config.h"

#include <array>
#include <cmath>

#include "core/error.h"
#include "io/json_file.h"

namespace otter {

namespace {

using nlohmann::json;

// diffusers 0.30.3 `__init__` defaults of each class, for the keys otter reads. Keys a class
// does not have are absent: a value for them can only come from the model's file.
const json& class_defaults(std::string_view class_name) {
  static const json common = {
      {"num_train_timesteps", 1000}, {"beta_start", 0.0001}, {"beta_end", 0.02}, {"beta_schedule", "linear"},
      {"trained_betas", nullptr},    {"prediction_type", "epsilon"}, {"steps_offset", 0}};
  auto with = [](json extra) {
    json j = common;
    j.update(extra);
    return j;
  };
  static const json thresholding = {
      {"thresholding", false}, {"dynamic_thresholding_ratio", 0.995}, {"sample_max_value", 1.0}};
  auto with_thresholding = [&](json extra) {
    json j = with(std::move(extra));
    j.update(thresholding);
    return j;
  };
  static const std::vector<std::pair<std::string_view, json>> table = {
      {"PNDMScheduler", with({{"skip_prk_steps", false}, {"set_alpha_to_one", false}, {"timestep_spacing", "leading"}})},
      {"DDIMScheduler", with_thresholding({{"clip_sample", true},
                                           {"set_alpha_to_one", true},
                                           {"clip_sample_range", 1.0},
                                           {"timestep_spacing", "leading"},
                                           {"rescale_betas_zero_snr", false}})},
      {"DDPMScheduler", with_thresholding({{"variance_type", "fixed_small"},
                                           {"clip_sample", true},
                                           {"clip_sample_range", 1.0},
                                           {"timestep_spacing", "leading"},
                                           {"rescale_betas_zero_snr", false}})},
      {"LMSDiscreteScheduler", with({{"use_karras_sigmas", false}, {"timestep_spacing", "linspace"}})},
      {"EulerDiscreteScheduler", with({{"interpolation_type", "linear"},
                                       {"use_karras_sigmas", false},
                                       {"sigma_min", nullptr},
                                       {"sigma_max", nullptr},
                                       {"timestep_spacing", "linspace"},
                                       {"timestep_type", "discrete"},
                                       {"rescale_betas_zero_snr", false},
                                       {"final_sigmas_type", "zero"}})},
      {"EulerAncestralDiscreteScheduler", with({{"timestep_spacing", "linspace"}, {"rescale_betas_zero_snr", false}})},
      // Heun's defaults are SD's beta range, unlike every other class.
      {"HeunDiscreteScheduler", with({{"beta_start", 0.00085},
                                      {"beta_end", 0.012},
                                      {"use_karras_sigmas", false},
                                      {"clip_sample", false},
                                      {"clip_sample_range", 1.0},
                                      {"timestep_spacing", "linspace"}})},
      {"DPMSolverMultistepScheduler", with_thresholding({{"solver_order", 2},
                                                         {"algorithm_type", "dpmsolver++"},
                                                         {"solver_type", "midpoint"},
                                                         {"lower_order_final", true},
                                                         {"euler_at_final", false},
                                                         {"use_karras_sigmas", false},
                                                         {"use_lu_lambdas", false},
                                                         {"final_sigmas_type", "zero"},
                                                         {"lambda_min_clipped", -std::numeric_limits<double>::infinity()},
                                                         {"variance_type", nullptr},
                                                         {"timestep_spacing", "linspace"},
                                                         {"rescale_betas_zero_snr", false}})},
      {"UniPCMultistepScheduler", with_thresholding({{"solver_order", 2},
                                                     {"predict_x0", true},
                                                     {"solver_type", "bh2"},
                                                     {"lower_order_final", true},
                                                     {"disable_corrector", json::array()},
                                                     {"solver_p", nullptr},
                                                     {"use_karras_sigmas", false},
                                                     {"timestep_spacing", "linspace"},
                                                     {"final_sigmas_type", "zero"},
                                                     {"rescale_betas_zero_snr", false}})},
  };
  for (const auto& [name, defaults] : table)
    if (name == class_name) return defaults;
  std::string known;
  for (const auto& [name, defaults] : table) known += cat(known.empty() ? "" : ", ", name);
  throw Error(cat("unknown scheduler class '", class_name, "' (known: ", known, ")"));
}

std::string where(const std::string& key, std::string_view class_name) {
  return cat("scheduler config key '", key, "' (", class_name, ")");
}

double number(const json& j, const std::string& key, std::string_view cls) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {  // Python's non-JSON literals, if a caller kept them as strings
    const std::string s = j.get<std::string>();
    if (s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
    if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  }
  throw Error(cat(where(key, cls), " must be a number, got ", j.dump()));
}

int integer(const json& j, const std::string& key, std::string_view cls) {
  OTTER_CHECK(j.is_number_integer(), where(key, cls), " must be an integer, got ", j.dump());
  return j.get<int>();
}

bool boolean(const json& j, const std::string& key, std::string_view cls) {
  OTTER_CHECK(j.is_boolean(), where(key, cls), " must be true or false, got ", j.dump());
  return j.get<bool>();
}

std::string string_or_empty(const json& j, const std::string& key, std::string_view cls) {
  if (j.is_null()) return {};
  OTTER_CHECK(j.is_string(), where(key, cls), " must be a string or null, got ", j.dump());
  return j.get<std::string>();
}

template <class Enum, size_t N>
Enum choice(const json& j, const std::string& key, std::string_view cls,
            const std::array<std::pair<std::string_view, Enum>, N>& options) {
  const std::string s = string_or_empty(j, key, cls);
  std::string listed;
  for (const auto& [name, value] : options) {
    if (name == s) return value;
    listed += cat(listed.empty() ? "" : ", ", name);
  }
  throw Error(cat(where(key, cls), " is '", s, "'; supported: ", listed));
}

constexpr std::array<std::pair<std::string_view, PredictionType>, 3> kPredictionTypes = {{
    {"epsilon", PredictionType::Epsilon}, {"v_prediction", PredictionType::VPrediction}, {"sample", PredictionType::Sample}}};
constexpr std::array<std::pair<std::string_view, BetaSchedule>, 3> kBetaSchedules = {{
    {"linear", BetaSchedule::Linear}, {"scaled_linear", BetaSchedule::ScaledLinear},
    {"squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2}}};
constexpr std::array<std::pair<std::string_view, TimestepSpacing>, 3> kSpacings = {{
    {"leading", TimestepSpacing::Leading}, {"trailing", TimestepSpacing::Trailing},
    {"linspace", TimestepSpacing::Linspace}}};

template <class Enum, size_t N>
std::string_view name_of(Enum value, const std::array<std::pair<std::string_view, Enum>, N>& options) {
  for (const auto& [name, v] : options)
    if (v == value) return name;
  return "?";
}

}  // namespace

std::string_view to_string(PredictionType p) { return name_of(p, kPredictionTypes); }
std::string_view to_string(BetaSchedule b) { return name_of(b, kBetaSchedules); }
std::string_view to_string(TimestepSpacing s) { return name_of(s, kSpacings); }

const std::vector<std::string_view>& known_scheduler_classes() {
  static const std::vector<std::string_view> names = {
      "PNDMScheduler",         "DDIMScheduler",
      "DDPMScheduler",         "LMSDiscreteScheduler",
      "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
      "HeunDiscreteScheduler", "DPMSolverMultistepScheduler",
      "UniPCMultistepScheduler"};
  return names;
}

SchedulerConfig SchedulerConfig::from_json(const json& given, std::string_view class_name) {
  OTTER_CHECK(given.is_object(), "scheduler config must be a JSON object, got ", given.dump());
  std::string cls(class_name);
  if (cls.empty()) {
    const auto it = given.find("_class_name");
    OTTER_CHECK(it != given.end() && it->is_string(),
                "scheduler config has no \"_class_name\"; name the diffusers scheduler class to resolve it for");
    cls = it->get<std::string>();
  }
  json merged = class_defaults(cls);
  for (const auto& [key, value] : given.items())
    if (!key.empty() && key[0] != '_') merged[key] = value;

  SchedulerConfig c;
  c.class_name = cls;
  c.given = given;
  for (const auto& [key, v] : merged.items()) {
    if (key == "num_train_timesteps") c.num_train_timesteps = integer(v, key, cls);
    else if (key == "beta_start") c.beta_start = number(v, key, cls);
    else if (key == "beta_end") c.beta_end = number(v, key, cls);
    else if (key == "beta_schedule") c.beta_schedule = choice(v, key, cls, kBetaSchedules);
    else if (key == "trained_betas") {
      c.trained_betas.clear();
      if (!v.is_null()) {
        OTTER_CHECK(v.is_array(), where(key, cls), " must be a list of numbers or null");
        for (const json& b : v) c.trained_betas.push_back(number(b, key, cls));
      }
    } else if (key == "rescale_betas_zero_snr") c.rescale_betas_zero_snr = boolean(v, key, cls);
    else if (key == "prediction_type") c.prediction_type = choice(v, key, cls, kPredictionTypes);
    else if (key == "timestep_spacing") c.timestep_spacing = choice(v, key, cls, kSpacings);
    else if (key == "steps_offset") c.steps_offset = integer(v, key, cls);
    else if (key == "set_alpha_to_one") c.set_alpha_to_one = boolean(v, key, cls);
    else if (key == "skip_prk_steps") c.skip_prk_steps = boolean(v, key, cls);
    else if (key == "clip_sample") c.clip_sample = boolean(v, key, cls);
    else if (key == "clip_sample_range") c.clip_sample_range = number(v, key, cls);
    else if (key == "thresholding") c.thresholding = boolean(v, key, cls);
    else if (key == "dynamic_thresholding_ratio") c.dynamic_thresholding_ratio = number(v, key, cls);
    else if (key == "sample_max_value") c.sample_max_value = number(v, key, cls);
    else if (key == "variance_type") c.variance_type = string_or_empty(v, key, cls);
    else if (key == "use_karras_sigmas") c.use_karras_sigmas = !v.is_null() && boolean(v, key, cls);
    else if (key == "sigma_min") c.sigma_min = v.is_null() ? std::nullopt : std::optional(number(v, key, cls));
    else if (key == "sigma_max") c.sigma_max = v.is_null() ? std::nullopt : std::optional(number(v, key, cls));
    else if (key == "interpolation_type") c.interpolation_type = string_or_empty(v, key, cls);
    else if (key == "timestep_type") c.timestep_type = string_or_empty(v, key, cls);
    else if (key == "final_sigmas_type") c.final_sigmas_type = string_or_empty(v, key, cls);
    else if (key == "solver_order") c.solver_order = integer(v, key, cls);
    else if (key == "algorithm_type") c.algorithm_type = string_or_empty(v, key, cls);
    else if (key == "solver_type") c.solver_type = string_or_empty(v, key, cls);
    else if (key == "lower_order_final") c.lower_order_final = boolean(v, key, cls);
    else if (key == "euler_at_final") c.euler_at_final = boolean(v, key, cls);
    else if (key == "use_lu_lambdas") c.use_lu_lambdas = !v.is_null() && boolean(v, key, cls);
    else if (key == "lambda_min_clipped") c.lambda_min_clipped = number(v, key, cls);
    else if (key == "predict_x0") c.predict_x0 = boolean(v, key, cls);
    else if (key == "disable_corrector") {
      OTTER_CHECK(v.is_array(), where(key, cls), " must be a list of step indices");
      c.disable_corrector.clear();
      for (const json& i : v) c.disable_corrector.push_back(integer(i, key, cls));
    } else if (key == "solver_p") {
      c.solver_p = v.is_null() ? std::nullopt : std::optional(v.dump());
    }
    // Other keys (other classes' settings carried over in the file) are kept in `given` only.
  }
  OTTER_CHECK(c.num_train_timesteps > 0, where("num_train_timesteps", cls), " must be positive, got ",
              c.num_train_timesteps);
  OTTER_CHECK(c.trained_betas.empty() || static_cast<int>(c.trained_betas.size()) == c.num_train_timesteps,
              where("trained_betas", cls), " has ", c.trained_betas.size(), " values but num_train_timesteps is ",
              c.num_train_timesteps);
  return c;
}

SchedulerConfig SchedulerConfig::for_class(std::string_view diffusers_class) const {
  return from_json(given, diffusers_class);
}

SchedulerConfig SchedulerConfig::from_file(const std::filesystem::path& path) {
  try {
    return from_json(read_json_file(path, "scheduler config"));
  } catch (const Error& e) {
    throw Error(cat(path.string(), ": ", e.what()));
  }
}

json SchedulerConfig::to_json() const {
  json j = {
      {"_class_name", class_name},
      {"num_train_timesteps", num_train_timesteps},
      {"beta_start", beta_start},
      {"beta_end", beta_end},
      {"beta_schedule", to_string(beta_schedule)},
      {"trained_betas", trained_betas.empty() ? json(nullptr) : json(trained_betas)},
      {"rescale_betas_zero_snr", rescale_betas_zero_snr},
      {"prediction_type", to_string(prediction_type)},
      {"timestep_spacing", to_string(timestep_spacing)},
      {"steps_offset", steps_offset},
      {"set_alpha_to_one", set_alpha_to_one},
      {"skip_prk_steps", skip_prk_steps},
      {"clip_sample", clip_sample},
      {"clip_sample_range", clip_sample_range},
      {"thresholding", thresholding},
      {"dynamic_thresholding_ratio", dynamic_thresholding_ratio},
      {"sample_max_value", sample_max_value},
      {"variance_type", variance_type.empty() ? json(nullptr) : json(variance_type)},
      {"use_karras_sigmas", use_karras_sigmas},
      {"sigma_min", sigma_min ? json(*sigma_min) : json(nullptr)},
      {"sigma_max", sigma_max ? json(*sigma_max) : json(nullptr)},
      {"interpolation_type", interpolation_type},
      {"timestep_type", timestep_type},
      {"final_sigmas_type", final_sigmas_type},
      {"solver_order", solver_order},
      {"algorithm_type", algorithm_type},
      {"solver_type", solver_type},
      {"lower_order_final", lower_order_final},
      {"euler_at_final", euler_at_final},
      {"use_lu_lambdas", use_lu_lambdas},
      {"lambda_min_clipped", lambda_min_clipped},
      {"predict_x0", predict_x0},
      {"disable_corrector", disable_corrector},
      {"solver_p", solver_p ? json(*solver_p) : json(nullptr)},
  };
  return j;
}

SchedulerConfig SchedulerConfig::sd1_default() {
  // runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json, key for key.
  return from_json(json{{"_class_name", "PNDMScheduler"},
                        {"_diffusers_version", "0.6.0"},
                        {"beta_end", 0.012},
                        {"beta_schedule", "scaled_linear"},
                        {"beta_start", 0.00085},
                        {"num_train_timesteps", 1000},
                        {"set_alpha_to_one", false},
                        {"skip_prk_steps", true},
                        {"steps_offset", 1},
                        {"trained_betas", nullptr},
                        {"clip_sample", false}});
}

SchedulerConfig SchedulerConfig::sd2_v_default() {
  // stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json, key for key.
  return from_json(json{{"_class_name", "DDIMScheduler"},
                        {"_diffusers_version", "0.8.0"},
                        {"beta_end", 0.012},
                        {"beta_schedule", "scaled_linear"},
                        {"beta_start", 0.00085},
                        {"clip_sample", false},
                        {"num_train_timesteps", 1000},
                        {"prediction_type", "v_prediction"},
                        {"set_alpha_to_one", false},
                        {"skip_prk_steps", true},
                        {"steps_offset", 1},
                        {"trained_betas", nullptr}});
}

}  // namespace otter

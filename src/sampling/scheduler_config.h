#pragma once
// The settings of a diffusers scheduler, read from a model's `scheduler/scheduler_config.json`.
//
// diffusers users swap samplers with `NewClass.from_config(model_config)`: keys present in the
// model's file carry over (beta schedule, steps_offset, prediction_type, ...), keys absent from
// it take the *new class's* defaults, and the defaults differ per class (timestep_spacing is
// "leading" for PNDM/DDIM/DDPM but "linspace" for the others; DDIM's set_alpha_to_one is true,
// PNDM's false; Heun's beta range is SD's, Euler's is not). SchedulerConfig keeps the keys as
// given so for_class() can redo that resolution for any sampler.
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace otter {

enum class PredictionType { Epsilon, VPrediction, Sample };
enum class BetaSchedule { Linear, ScaledLinear, SquaredCosCapV2 };
enum class TimestepSpacing { Leading, Trailing, Linspace };

std::string_view to_string(PredictionType p);  // "epsilon", "v_prediction", "sample"
std::string_view to_string(BetaSchedule b);     // "linear", "scaled_linear", "squaredcos_cap_v2"
std::string_view to_string(TimestepSpacing s);  // "leading", "trailing", "linspace"

struct SchedulerConfig {
  // diffusers class the settings were resolved for ("PNDMScheduler", "EulerDiscreteScheduler", ...).
  std::string class_name;

  // Training noise schedule.
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::Linear;
  std::vector<double> trained_betas;  // empty unless the file lists them (then they win)
  bool rescale_betas_zero_snr = false;

  // What the UNet predicts and how inference timesteps are spread.
  PredictionType prediction_type = PredictionType::Epsilon;
  TimestepSpacing timestep_spacing = TimestepSpacing::Leading;
  int steps_offset = 0;

  // DDIM / PNDM / DDPM.
  bool set_alpha_to_one = false;
  bool skip_prk_steps = false;
  bool clip_sample = false;
  double clip_sample_range = 1.0;
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string variance_type;  // DDPM: "fixed_small" ...; DPM-Solver: "" (None) or "learned[_range]"

  // Sigma-space samplers (LMS, Euler, Euler ancestral, Heun, DPM-Solver, UniPC).
  bool use_karras_sigmas = false;
  std::optional<double> sigma_min;  // Euler only; None = take them from the schedule
  std::optional<double> sigma_max;
  std::string interpolation_type = "linear";  // Euler: "linear" | "log_linear"
  std::string timestep_type = "discrete";     // Euler: "discrete" | "continuous"
  std::string final_sigmas_type = "zero";     // "zero" | "sigma_min"

  // Multistep solvers (DPM-Solver++, UniPC).
  int solver_order = 2;
  std::string algorithm_type = "dpmsolver++";  // DPM-Solver
  std::string solver_type = "midpoint";        // DPM-Solver: midpoint|heun; UniPC: bh1|bh2
  bool lower_order_final = true;
  bool euler_at_final = false;
  bool use_lu_lambdas = false;
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
  bool predict_x0 = true;               // UniPC
  std::vector<int> disable_corrector;   // UniPC: step indices whose corrector is skipped
  std::optional<std::string> solver_p;  // UniPC: an external predictor (not supported)

  // The keys as read from the file, before defaults were filled in.
  nlohmann::json given = nlohmann::json::object();

  // Resolves `json` for `class_name` (default: the file's own "_class_name"): class defaults,
  // overridden by every key present. Throws otter::Error naming the key on a bad value.
  static SchedulerConfig from_json(const nlohmann::json& json, std::string_view class_name = {});
  // Reads a scheduler_config.json (tolerating Python's NaN/Infinity literals, which diffusers
  // writes for e.g. lambda_min_clipped = -inf; see io/json_file.h).
  static SchedulerConfig from_file(const std::filesystem::path& path);

  // The same model config re-resolved for another diffusers class (keys present carry over,
  // absent ones take that class's defaults), as `Class.from_config(config)` does.
  SchedulerConfig for_class(std::string_view diffusers_class) const;

  // The effective settings under diffusers' key names (for logs and comparisons).
  nlohmann::json to_json() const;

  // Configs for single-file checkpoints, which carry no scheduler_config.json:
  // SD 1.x: runwayml/stable-diffusion-v1-5's PNDM config (epsilon prediction);
  // SD 2.x 768-v: stabilityai/stable-diffusion-2-1's DDIM config (v-prediction).
  static SchedulerConfig sd1_default();
  static SchedulerConfig sd2_v_default();
};

// The diffusers classes SchedulerConfig knows the defaults of.
const std::vector<std::string_view>& known_scheduler_classes();

}  // namespace otter

#pragma once
// What the guider files share (not for callers, who use guider.h): one factory per guider file,
// which make_guider (guider_registry.cpp) picks by name; the CFG family's parameters, step window
// and formula (guider_common.cpp); and CfgFamilyGuider, the skeleton they all fill in.
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "guidance/guider.h"

namespace otter {

std::unique_ptr<Guider> make_cfg_guider(const nlohmann::json& params);             // cfg_guider.cpp
std::unique_ptr<Guider> make_cfg_zero_star_guider(const nlohmann::json& params);   // cfg_zero_star_guider.cpp
std::unique_ptr<Guider> make_apg_guider(const nlohmann::json& params);             // apg_guider.cpp
std::unique_ptr<Guider> make_tcfg_guider(const nlohmann::json& params);            // tcfg_guider.cpp
std::unique_ptr<Guider> make_mambo_guider(const nlohmann::json& params);           // mambo_guider.cpp
std::unique_ptr<Guider> make_pag_pipeline_guider(const nlohmann::json& params);    // pag_pipeline_guider.cpp
std::unique_ptr<Guider> make_pag_guider(const nlohmann::json& params);             // pag_guider.cpp
std::unique_ptr<Guider> make_slg_guider(const nlohmann::json& params);             // slg_guider.cpp
std::unique_ptr<Guider> make_seg_guider(const nlohmann::json& params);             // seg_guider.cpp
std::unique_ptr<Guider> make_auto_guider(const nlohmann::json& params);            // auto_guider.cpp
std::unique_ptr<Guider> make_apg_mix_guider(const nlohmann::json& params);         // apg_mix_guider.cpp
std::unique_ptr<Guider> make_fdg_guider(const nlohmann::json& params);             // fdg_guider.cpp
std::unique_ptr<Guider> make_cfg_pp_guider(const nlohmann::json& params);          // cfg_pp_guider.cpp

namespace guider_detail {

// The parameters of diffusers' ClassifierFreeGuidance that the CFG family shares.
struct CfgParams {
  double guidance_scale = 7.5;
  double guidance_rescale = 0.0;
  bool use_original_formulation = false;
  double start = 0.0, stop = 1.0;
  bool enabled = true;
};

// Takes `key` out of `rest` (a guider's remaining parameters); `fallback` when absent or null.
template <class T>
T take(nlohmann::json& rest, const char* key, T fallback) {
  if (!rest.contains(key)) return fallback;
  T value = rest[key].is_null() ? fallback : rest[key].get<T>();
  rest.erase(key);
  return value;
}

// Reads the shared keys from `params` (what is left goes to `rest`), with `default_scale`.
CfgParams read_cfg_params(const nlohmann::json& params, nlohmann::json& rest, double default_scale = 7.5);
// Throws naming the guider and any key left in `rest`.
void check_no_unknown(const std::string& guider, const nlohmann::json& rest);

// diffusers' step window: int(start·N) <= step < int(stop·N), products in double, truncated.
bool in_window(double start, double stop, const GuiderStep& s);
// diffusers' _is_cfg_enabled: enabled, in the window, and the scale not (math.isclose) 1 — or 0
// with the original formulation.
bool cfg_enabled(const CfgParams& p, const GuiderStep& s);

// torch.std of n f32 values (unbiased), accumulated in double as torch's CPU kernel does.
double unbiased_stddev(const float* x, int64_t n);
// rescale_noise_cfg: per batch row, x·(std(ref)/std(x)) mixed with x by r (each std as f32).
Tensor rescale(const Tensor& x, const Tensor& ref, double r);
// d = c - u, elementwise in f32.
Tensor difference(const Tensor& c, const Tensor& u);
// pred = u + s·d (diffusers) or c + s·d (original formulation), elementwise in f32.
Tensor guided(const Tensor& u, const Tensor& c, const Tensor& d, double scale, bool original);

// The CFG family: cond alone outside cfg_enabled(), guide() inside it, then the rescale (which
// diffusers applies on every step when guidance_rescale > 0, guided or not).
class CfgFamilyGuider : public Guider {
 public:
  explicit CfgFamilyGuider(const CfgParams& p) : p_(p) {}
  Needs needs(const GuiderStep& s) const override { return {cfg_enabled(p_, s), false}; }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    return finish(cfg_enabled(p_, s) ? guide(s, p.cond.contiguous(), p.uncond.contiguous()) : p.cond.contiguous(),
                  p.cond);
  }

 protected:
  // The guided prediction on a step where guidance is on; c and u contiguous f32. By default the
  // classic formula (ClassifierFreeGuidance, AutoGuidance); the other methods replace it.
  virtual Tensor guide(const GuiderStep& s, const Tensor& c, const Tensor& u);
  Tensor finish(const Tensor& pred, const Tensor& cond) const {
    return p_.guidance_rescale > 0 ? rescale(pred, cond, p_.guidance_rescale) : pred;
  }
  CfgParams p_;
};

// The perturbed family's own parameters (diffusers' PerturbedAttentionGuidance, SkipLayerGuidance,
// SmoothedEnergyGuidance: the same forward, different names and perturbation).
struct PerturbedParams {
  double scale = 2.8, start = 0.01, stop = 0.2;
  Perturbation perturbation;
};

// The transformer layers a perturbed guider uses: `key` or otter's short `layers` (indices or
// names), or its diffusers
// `config_key` (a dict or list of dicts with "indices", and "fqn" naming where they are), or
// "mid" when neither is given (diffusers requires one; SD's PAG pipeline defaults to "mid").
nlohmann::json take_layers(nlohmann::json& rest, const char* key, const char* config_key);

// The forward PAG, SEG and SLG share: CFG where cfg_enabled(), plus sp·(c − p) where the perturbed
// rule holds: int(start·N) < step < int(stop·N) (a strict lower bound: diffusers never perturbs
// step 0) and the scale is not 0.
class PerturbedFamilyGuider : public Guider {
 public:
  PerturbedFamilyGuider(std::string name, const CfgParams& cfg, const PerturbedParams& pg)
      : name_(std::move(name)), cfg_(cfg), pg_(pg) {}
  std::string name() const override { return name_; }
  Needs needs(const GuiderStep& s) const override { return {cfg_enabled(cfg_, s), perturbed_enabled(s)}; }
  Tensor combine(const GuiderStep& s, const Predictions& p) override;
  std::optional<Perturbation> perturbation() const override { return pg_.perturbation; }

 private:
  bool perturbed_enabled(const GuiderStep& s) const;
  std::string name_;
  CfgParams cfg_;
  PerturbedParams pg_;
};

// Python's math.isclose(a, b) with its defaults (rel_tol 1e-9, abs_tol 0).
bool is_close(double a, double b);

// diffusers' project(v0, v1) over all non-batch dims, per batch row: v1n = v1 / max(|v1|, 1e-12),
// par = <v0, v1n>·v1n, orth = v0 − par, computed in double, each rounded to f32 separately.
// Inputs contiguous f32 of one shape.
void project(const Tensor& v0, const Tensor& v1, Tensor& parallel, Tensor& orthogonal);

// APG's momentum: running = d + m·running, elementwise in f32 (running made zero on first use).
void accumulate_momentum(Tensor& running, const Tensor& d, double momentum);

// (base + scale·(c − p)), elementwise in f32: the perturbed term added to a prediction.
Tensor add_perturbed_term(const Tensor& base, const Tensor& c, const Tensor& p, double scale);

}  // namespace guider_detail
}  // namespace otter

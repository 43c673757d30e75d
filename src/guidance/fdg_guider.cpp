// Frequency-decoupled guidance (Sadat et al. 2025, arXiv 2506.19713; diffusers'
// FrequencyDecoupledGuidance): c and u are split into Laplacian pyramid levels and each level is
// guided with its own scale — strong at low frequencies (structure), mild at high ones (detail,
// where strong guidance over-saturates) — optionally with APG's down-weighted parallel part, then
// the levels are put back together. Level 0 is the highest frequency.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "guidance/guider_parts.h"
#include "guidance/laplacian_pyramid.h"

namespace otter {
namespace {

using namespace guider_detail;

struct FdgParams {
  std::vector<double> scales{10.0, 5.0};
  std::vector<double> rescale, parallel_weights, start, stop;  // one per level
  bool original = false, enabled = true, upcast = true, rescale_in_freq = false;
};

// One level's guided prediction, in T (double with upcast_to_double, else float).
template <class T>
Tensor guide_level(const Tensor& pc, const Tensor& pu, double scale, double pw, bool original) {
  const int64_t rows = pc.dim(0), n = pc.numel() / rows;
  Tensor out = Tensor::empty(pc.shape(), DType::F32);
  std::vector<T> shift(static_cast<size_t>(n));
  for (int64_t b = 0; b < rows; ++b) {
    const float* c = pc.f32() + b * n;
    const float* u = pu.f32() + b * n;
    for (int64_t i = 0; i < n; ++i) shift[static_cast<size_t>(i)] = static_cast<T>(c[i]) - static_cast<T>(u[i]);
    if (!is_close(pw, 1.0)) {
      // project(shift, c): F.normalize(c), par = <shift, ĉ>·ĉ, shift = pw·par + orth.
      T norm = 0, dot = 0;
      for (int64_t i = 0; i < n; ++i) norm += static_cast<T>(c[i]) * static_cast<T>(c[i]);
      norm = std::max(static_cast<T>(std::sqrt(norm)), static_cast<T>(1e-12));
      for (int64_t i = 0; i < n; ++i) dot += shift[static_cast<size_t>(i)] * (static_cast<T>(c[i]) / norm);
      for (int64_t i = 0; i < n; ++i) {
        const T par = dot * (static_cast<T>(c[i]) / norm);
        const T orth = shift[static_cast<size_t>(i)] - par;
        shift[static_cast<size_t>(i)] = static_cast<T>(pw) * par + orth;
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const T base = static_cast<T>(original ? c[i] : u[i]);
      out.f32()[b * n + i] = static_cast<float>(base + static_cast<T>(scale) * shift[static_cast<size_t>(i)]);
    }
  }
  return out;
}

class FdgGuider : public Guider {
 public:
  explicit FdgGuider(FdgParams p) : p_(std::move(p)) {}
  std::string name() const override { return "FrequencyDecoupledGuidance"; }
  Needs needs(const GuiderStep& s) const override { return {enabled(s), false}; }
  void check_latent_size(int64_t h, int64_t w) const override {
    check_pyramid_size(h, w, static_cast<int>(p_.scales.size()));
  }
  Tensor combine(const GuiderStep& s, const Predictions& pr) override {
    const Tensor c = pr.cond.contiguous();
    if (!enabled(s)) return c;
    const int L = static_cast<int>(p_.scales.size());
    const std::vector<Tensor> pc = laplacian_pyramid(c, L), pu = laplacian_pyramid(pr.uncond.contiguous(), L);
    std::vector<Tensor> guided_levels;
    for (int k = 0; k < L; ++k) {
      const size_t i = static_cast<size_t>(k);
      if (!level_enabled(s, k)) {
        guided_levels.push_back(pc[i]);  // the evident intent; stock diffusers crashes here
        continue;
      }
      Tensor level = p_.upcast ? guide_level<double>(pc[i], pu[i], p_.scales[i], p_.parallel_weights[i], p_.original)
                               : guide_level<float>(pc[i], pu[i], p_.scales[i], p_.parallel_weights[i], p_.original);
      if (p_.rescale_in_freq && p_.rescale[i] > 0) level = rescale(level, pc[i], p_.rescale[i]);
      guided_levels.push_back(level);
    }
    Tensor pred = image_from_pyramid(guided_levels);
    if (!p_.rescale_in_freq && p_.rescale[0] > 0) pred = rescale(pred, c, p_.rescale[0]);
    return pred;
  }

 private:
  bool scale_is_identity(double s) const { return is_close(s, p_.original ? 0.0 : 1.0); }
  bool level_enabled(const GuiderStep& s, int k) const {
    const size_t i = static_cast<size_t>(k);
    return p_.enabled && in_window(p_.start[i], p_.stop[i], s) && !scale_is_identity(p_.scales[i]);
  }
  bool enabled(const GuiderStep& s) const {
    if (!p_.enabled) return false;
    const double lo = *std::min_element(p_.start.begin(), p_.start.end());
    const double hi = *std::max_element(p_.stop.begin(), p_.stop.end());
    if (!in_window(lo, hi, s)) return false;
    for (double sc : p_.scales)
      if (!scale_is_identity(sc)) return true;
    return false;
  }
  FdgParams p_;
};

// A parameter given once for all levels or once per level.
std::vector<double> per_level(nlohmann::json& rest, const char* key, double fallback, size_t levels) {
  const nlohmann::json v = take(rest, key, nlohmann::json(fallback));
  if (v.is_number()) return std::vector<double>(levels, v.get<double>());
  OTTER_CHECK(v.is_array() && v.size() == levels, "FrequencyDecoupledGuidance: ", key,
              " must be a number or one per level (", levels, "), got ", v.dump());
  return v.get<std::vector<double>>();
}

}  // namespace

std::unique_ptr<Guider> make_fdg_guider(const nlohmann::json& params) {
  OTTER_CHECK(params.is_object() || params.is_null(), "guider parameters must be an object, got ", params.dump());
  nlohmann::json rest = params.is_null() ? nlohmann::json::object() : params;
  FdgParams p;
  p.scales = take(rest, "guidance_scales", p.scales);
  OTTER_CHECK(!p.scales.empty(), "FrequencyDecoupledGuidance: guidance_scales needs at least one level");
  const size_t L = p.scales.size();
  p.rescale = per_level(rest, "guidance_rescale", 0.0, L);
  p.parallel_weights = per_level(rest, "parallel_weights", 1.0, L);
  p.start = per_level(rest, "start", 0.0, L);
  p.stop = per_level(rest, "stop", 1.0, L);
  p.original = take(rest, "use_original_formulation", false);
  p.enabled = take(rest, "enabled", true);
  p.upcast = take(rest, "upcast_to_double", true);
  const std::string space = take(rest, "guidance_rescale_space", std::string("data"));
  OTTER_CHECK(space == "data" || space == "freq", "FrequencyDecoupledGuidance: guidance_rescale_space is \"data\" or "
              "\"freq\", got \"", space, "\"");
  p.rescale_in_freq = space == "freq";
  for (size_t i = 0; i < L; ++i)
    OTTER_CHECK(p.start[i] >= 0 && p.start[i] <= p.stop[i] && p.stop[i] <= 1 && p.rescale[i] >= 0 && p.rescale[i] <= 1,
                "FrequencyDecoupledGuidance: level ", i, " needs 0 <= start <= stop <= 1 and guidance_rescale in [0, 1]");
  check_no_unknown("FrequencyDecoupledGuidance", rest);
  return std::make_unique<FdgGuider>(std::move(p));
}

}  // namespace otter

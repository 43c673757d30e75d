// Adaptive projected guidance (Sadat et al. 2024, arXiv 2410.02416), as diffusers'
// AdaptiveProjectedGuidance: the guidance direction d = c − u is averaged over the steps with a
// momentum (optional), its norm clipped to norm_threshold, and split into the part parallel to the
// conditional prediction (which over-saturates) and the orthogonal part; pred = u + s·(orth + eta·par).
// With eta = 1, no threshold and no momentum it is CFG.
#include <cmath>
#include <optional>
#include <set>

#include "core/error.h"
#include "guidance/guider_factories.h"

namespace otter {
namespace {

using namespace guider_detail;

// Group index of every element when reducing over `dims` of a contiguous 4-D (or any rank) tensor:
// elements that differ only along the reduced dims share a group.
struct Reduction {
  std::vector<int64_t> group;  // per element
  int64_t groups = 0;
};

Reduction reduction_over(const Shape& shape, const std::set<int>& dims) {
  Reduction r;
  const int rank = static_cast<int>(shape.rank());
  r.group.resize(static_cast<size_t>(shape.numel()));
  std::vector<int64_t> index(static_cast<size_t>(rank), 0);
  std::vector<int64_t> kept_stride(static_cast<size_t>(rank), 0);
  int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (!dims.count(d)) {
      kept_stride[static_cast<size_t>(d)] = stride;
      stride *= shape[d];
    }
  }
  r.groups = stride;
  for (int64_t i = 0; i < shape.numel(); ++i) {
    int64_t g = 0;
    for (int d = 0; d < rank; ++d) g += index[static_cast<size_t>(d)] * kept_stride[static_cast<size_t>(d)];
    r.group[static_cast<size_t>(i)] = g;
    for (int d = rank - 1; d >= 0; --d) {  // advance the multi-index
      if (++index[static_cast<size_t>(d)] < shape[d]) break;
      index[static_cast<size_t>(d)] = 0;
    }
  }
  return r;
}

class ApgGuider : public Guider {
 public:
  ApgGuider(const CfgParams& p, std::optional<double> momentum, double norm_threshold,
            std::optional<std::vector<int>> norm_dims, double eta)
      : p_(p), momentum_(momentum), norm_threshold_(norm_threshold), norm_dims_(std::move(norm_dims)), eta_(eta) {}
  std::string name() const override { return "AdaptiveProjectedGuidance"; }
  std::vector<Prediction> needs(const GuiderStep& s) const override {
    if (cfg_enabled(p_, s)) return {Prediction::cond, Prediction::uncond};
    return {Prediction::cond};
  }
  void reset() override { running_ = Tensor(); }

  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    // diffusers creates the momentum buffer at step 0 (prepare_inputs); it only moves on enabled steps.
    if (s.step == 0) reset();
    Tensor pred;
    if (!cfg_enabled(p_, s)) {
      pred = p.cond.contiguous();
    } else {
      const Tensor c = p.cond.contiguous(), u = p.uncond.contiguous();
      Tensor d = difference(c, u);
      const int64_t n = d.numel();
      if (momentum_) {
        if (!running_.defined()) running_ = Tensor::zeros(d.shape(), DType::F32);
        const float m = static_cast<float>(*momentum_);
        for (int64_t i = 0; i < n; ++i) {
          const float decayed = m * running_.f32()[i];
          running_.f32()[i] = d.f32()[i] + decayed;
        }
        d = running_.clone();
      }
      std::set<int> dims;
      if (norm_dims_) {
        for (int dim : *norm_dims_) dims.insert(dim < 0 ? dim + static_cast<int>(d.rank()) : dim);
      } else {
        for (int dim = 1; dim < static_cast<int>(d.rank()); ++dim) dims.insert(dim);
      }
      const Reduction groups = reduction_over(d.shape(), dims);
      if (norm_threshold_ > 0) {
        // torch.norm in f32, then scale = min(1, tau / norm) per group.
        std::vector<double> sq(static_cast<size_t>(groups.groups), 0.0);
        for (int64_t i = 0; i < n; ++i)
          sq[static_cast<size_t>(groups.group[static_cast<size_t>(i)])] += static_cast<double>(d.f32()[i]) * d.f32()[i];
        std::vector<float> factor(sq.size());
        const float tau = static_cast<float>(norm_threshold_);
        for (size_t g = 0; g < sq.size(); ++g) factor[g] = std::fmin(1.0f, tau / static_cast<float>(std::sqrt(sq[g])));
        for (int64_t i = 0; i < n; ++i) d.f32()[i] *= factor[static_cast<size_t>(groups.group[static_cast<size_t>(i)])];
      }
      // Projection of d on c, in double (diffusers: F.normalize then the parallel part).
      std::vector<double> c_norm(static_cast<size_t>(groups.groups), 0.0), dot(c_norm.size(), 0.0);
      for (int64_t i = 0; i < n; ++i) {
        const double ci = c.f32()[i];
        c_norm[static_cast<size_t>(groups.group[static_cast<size_t>(i)])] += ci * ci;
      }
      for (double& v : c_norm) v = std::max(std::sqrt(v), 1e-12);
      for (int64_t i = 0; i < n; ++i) {
        const size_t g = static_cast<size_t>(groups.group[static_cast<size_t>(i)]);
        dot[g] += static_cast<double>(d.f32()[i]) * (c.f32()[i] / c_norm[g]);
      }
      Tensor update = Tensor::empty(d.shape(), DType::F32);
      const float eta = static_cast<float>(eta_);
      for (int64_t i = 0; i < n; ++i) {
        const size_t g = static_cast<size_t>(groups.group[static_cast<size_t>(i)]);
        const double parallel = dot[g] * (c.f32()[i] / c_norm[g]);
        const auto par = static_cast<float>(parallel);
        const auto orth = static_cast<float>(static_cast<double>(d.f32()[i]) - parallel);
        const float scaled_par = eta * par;
        update.f32()[i] = orth + scaled_par;
      }
      pred = guided(u, c, update, p_.guidance_scale, p_.use_original_formulation);
    }
    if (p_.guidance_rescale > 0) pred = rescale(pred, p.cond, p_.guidance_rescale);
    return pred;
  }

 private:
  CfgParams p_;
  std::optional<double> momentum_;
  double norm_threshold_;
  std::optional<std::vector<int>> norm_dims_;
  double eta_;
  Tensor running_;  // the momentum buffer, per image row
};

}  // namespace

std::unique_ptr<Guider> make_apg_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest);
  std::optional<double> momentum;
  double threshold = 15.0, eta = 1.0;
  std::optional<std::vector<int>> dims;
  if (rest.contains("adaptive_projected_guidance_momentum")) {
    if (!rest["adaptive_projected_guidance_momentum"].is_null())
      momentum = rest["adaptive_projected_guidance_momentum"].get<double>();
    rest.erase("adaptive_projected_guidance_momentum");
  }
  if (rest.contains("adaptive_projected_guidance_rescale")) {
    threshold = rest["adaptive_projected_guidance_rescale"].get<double>();
    rest.erase("adaptive_projected_guidance_rescale");
  }
  if (rest.contains("adaptive_projected_guidance_norm_dim")) {
    const nlohmann::json& d = rest["adaptive_projected_guidance_norm_dim"];
    if (d.is_number_integer()) dims = std::vector<int>{d.get<int>()};
    else if (d.is_array()) dims = d.get<std::vector<int>>();
    else OTTER_CHECK(d.is_null(), "adaptive_projected_guidance_norm_dim must be null, a dim or a list of dims");
    rest.erase("adaptive_projected_guidance_norm_dim");
  }
  if (rest.contains("eta")) {
    eta = rest["eta"].get<double>();
    rest.erase("eta");
  }
  check_no_unknown("AdaptiveProjectedGuidance", rest);
  return std::make_unique<ApgGuider>(p, momentum, threshold, dims, eta);
}

}  // namespace otter

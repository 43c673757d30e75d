// Adaptive projected guidance (Sadat et al. 2024, arXiv 2410.02416), as diffusers'
// AdaptiveProjectedGuidance: the guidance direction d = c − u is averaged over the steps with a
// momentum (optional), its norm clipped to norm_threshold, and split into the part parallel to the
// conditional prediction (which over-saturates) and the orthogonal part; pred = u + s·(orth + eta·par).
// With eta = 1, no threshold and no momentum it is CFG.
#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter {
namespace {

using namespace guider_detail;

// Which reduction group each element of a contiguous tensor falls in, when reducing over `dims`:
// elements that differ only along the reduced dims share a group.
std::vector<int64_t> groups_over(const Shape& shape, const std::set<int>& dims, int64_t& groups) {
  const int rank = static_cast<int>(shape.rank());
  std::vector<int64_t> index(static_cast<size_t>(rank), 0), kept_stride(static_cast<size_t>(rank), 0);
  groups = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (!dims.count(d)) {
      kept_stride[static_cast<size_t>(d)] = groups;
      groups *= shape[d];
    }
  }
  std::vector<int64_t> group(static_cast<size_t>(shape.numel()));
  for (int64_t& g : group) {
    g = 0;
    for (int d = 0; d < rank; ++d) g += index[static_cast<size_t>(d)] * kept_stride[static_cast<size_t>(d)];
    for (int d = rank - 1; d >= 0; --d) {  // advance the multi-index
      if (++index[static_cast<size_t>(d)] < shape[d]) break;
      index[static_cast<size_t>(d)] = 0;
    }
  }
  return group;
}

class ApgGuider : public CfgFamilyGuider {
 public:
  ApgGuider(const CfgParams& p, std::optional<double> momentum, double norm_threshold,
            std::optional<std::vector<int>> norm_dims, double eta)
      : CfgFamilyGuider(p), momentum_(momentum), norm_threshold_(norm_threshold), norm_dims_(std::move(norm_dims)),
        eta_(eta) {}
  std::string name() const override { return "AdaptiveProjectedGuidance"; }
  void reset() override { running_ = Tensor(); }
  Tensor combine(const GuiderStep& s, const Predictions& p) override {
    // diffusers creates the momentum buffer at step 0 (prepare_inputs); it only moves on enabled steps.
    if (s.step == 0) reset();
    return CfgFamilyGuider::combine(s, p);
  }

 protected:
  Tensor guide(const GuiderStep&, const Tensor& c, const Tensor& u) override {
    Tensor d = difference(c, u);
    const int64_t n = d.numel();
    if (momentum_) {
      accumulate_momentum(running_, d, *momentum_);
      d = running_.clone();
    }
    prepare_groups(d.shape());
    const auto group = [&](int64_t i) { return static_cast<size_t>(group_[static_cast<size_t>(i)]); };
    if (norm_threshold_ > 0) {
      // torch.norm in f32, then scale = min(1, tau / norm) per group.
      std::fill(sum_.begin(), sum_.end(), 0.0);
      for (int64_t i = 0; i < n; ++i) sum_[group(i)] += static_cast<double>(d.f32()[i]) * d.f32()[i];
      const float tau = static_cast<float>(norm_threshold_);
      for (size_t g = 0; g < sum_.size(); ++g) factor_[g] = std::fmin(1.0f, tau / static_cast<float>(std::sqrt(sum_[g])));
      for (int64_t i = 0; i < n; ++i) d.f32()[i] *= factor_[group(i)];
    }
    // Projection of d on c, in double (diffusers: F.normalize then the parallel part).
    std::fill(sum_.begin(), sum_.end(), 0.0);  // |c|² per group, then |c|
    std::fill(dot_.begin(), dot_.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) sum_[group(i)] += static_cast<double>(c.f32()[i]) * c.f32()[i];
    for (double& v : sum_) v = std::max(std::sqrt(v), 1e-12);
    for (int64_t i = 0; i < n; ++i) dot_[group(i)] += static_cast<double>(d.f32()[i]) * (c.f32()[i] / sum_[group(i)]);
    Tensor update = Tensor::empty(d.shape(), DType::F32);
    const float eta = static_cast<float>(eta_);
    for (int64_t i = 0; i < n; ++i) {
      const double parallel = dot_[group(i)] * (c.f32()[i] / sum_[group(i)]);
      const auto par = static_cast<float>(parallel);
      const auto orth = static_cast<float>(static_cast<double>(d.f32()[i]) - parallel);
      const float scaled_par = eta * par;
      update.f32()[i] = orth + scaled_par;
    }
    return guided(u, c, update, p_.guidance_scale, p_.use_original_formulation);
  }

 private:
  // The element -> group map and per-group sums, made once per shape (not every step).
  void prepare_groups(const Shape& shape) {
    if (shape == grouped_shape_ && !group_.empty()) return;
    std::set<int> dims;
    const int rank = static_cast<int>(shape.rank());
    if (norm_dims_) {
      for (int dim : *norm_dims_) dims.insert(dim < 0 ? dim + rank : dim);
    } else {
      for (int dim = 1; dim < rank; ++dim) dims.insert(dim);
    }
    int64_t groups = 0;
    group_ = groups_over(shape, dims, groups);
    sum_.assign(static_cast<size_t>(groups), 0.0);
    dot_.assign(sum_.size(), 0.0);
    factor_.assign(sum_.size(), 0.0f);
    grouped_shape_ = shape;
  }

  std::optional<double> momentum_;
  double norm_threshold_;
  std::optional<std::vector<int>> norm_dims_;
  double eta_;
  Tensor running_;  // the momentum buffer, per image row
  Shape grouped_shape_;
  std::vector<int64_t> group_;
  std::vector<double> sum_, dot_;
  std::vector<float> factor_;
};

}  // namespace

std::unique_ptr<Guider> make_apg_guider(const nlohmann::json& params) {
  nlohmann::json rest;
  const CfgParams p = read_cfg_params(params, rest);
  std::optional<double> momentum;  // null = no momentum
  if (!rest.value("adaptive_projected_guidance_momentum", nlohmann::json()).is_null())
    momentum = rest["adaptive_projected_guidance_momentum"].get<double>();
  rest.erase("adaptive_projected_guidance_momentum");
  const double threshold = take(rest, "adaptive_projected_guidance_rescale", 15.0);
  const double eta = take(rest, "eta", 1.0);
  std::optional<std::vector<int>> dims;  // null = every non-batch dim
  const nlohmann::json norm_dim = rest.value("adaptive_projected_guidance_norm_dim", nlohmann::json());
  if (norm_dim.is_number_integer()) dims = std::vector<int>{norm_dim.get<int>()};
  else if (norm_dim.is_array()) dims = norm_dim.get<std::vector<int>>();
  else OTTER_CHECK(norm_dim.is_null(), "adaptive_projected_guidance_norm_dim must be null, a dim or a list of dims");
  rest.erase("adaptive_projected_guidance_norm_dim");
  check_no_unknown("AdaptiveProjectedGuidance", rest);
  return std::make_unique<ApgGuider>(p, momentum, threshold, dims, eta);
}

}  // namespace otter

// LMS: linear multistep in sigma (k-diffusion's sample_lms), diffusers' LMSDiscreteScheduler.
//
// With d_k = (x - x0_k)/sigma_k the derivative dx/dsigma at the last (up to) four sigmas, a step
// is x += sum_j c_j d_{i-j}, where c_j integrates the Lagrange basis polynomial of node j over
// [sigma_i, sigma_{i+1}]. diffusers integrates numerically (scipy.integrate.quad); the basis is a
// polynomial of degree <= 3, so otter integrates it exactly with 3-point Gauss–Legendre (exact up
// to degree 5) in double precision.
#include <algorithm>
#include <array>
#include <cmath>
#include <deque>

#include "core/error.h"
#include "sampling/sampler_common.h"

namespace otter::detail {

namespace {

constexpr int kLmsOrder = 4;  // diffusers' step(order=4) default

class LmsSampler final : public Sampler {
 public:
  explicit LmsSampler(SchedulerConfig c)
      : Sampler(std::move(c)),
        train_sigmas_(sigmas_from_alphas_cumprod(make_training_schedule(config_).alphas_cumprod)) {}

  std::string name() const override { return "lms"; }

  void set_timesteps(int n) override {
    // LMS spaces its timesteps in float64 (numpy default), unlike Euler and Heun.
    const SigmaSteps s = k_sigma_steps(config_, n, /*float32_linspace=*/false, train_sigmas_);
    std::vector<float> sigmas = to_float(s.sigmas);
    sigmas.push_back(0.0f);
    derivatives_.clear();
    reset_schedule(to_float(s.timesteps), std::move(sigmas));
  }

  float init_noise_sigma() const override { return sigma_init_noise_sigma(sigmas(), config_.timestep_spacing); }

  // Integral over [sigma_t, sigma_{t+1}] of the Lagrange basis polynomial that is 1 at
  // sigma_{t-current} and 0 at the other nodes sigma_{t-k}, k < order.
  double lms_coefficient(int order, int t, int current) const {
    const std::vector<float>& s = sigmas();
    auto basis = [&](double tau) {
      double prod = 1.0;
      for (int k = 0; k < order; ++k) {
        if (k == current) continue;
        const double node = s[static_cast<size_t>(t - k)];
        prod *= (tau - node) / (static_cast<double>(s[static_cast<size_t>(t - current)]) - node);
      }
      return prod;
    };
    // 3-point Gauss–Legendre on [a, b].
    const double a = s[static_cast<size_t>(t)], b = s[static_cast<size_t>(t + 1)];
    const double half = (b - a) / 2, mid = (a + b) / 2;
    static constexpr std::array<double, 3> nodes = {-0.7745966692414833770, 0.0, 0.7745966692414833770};
    static constexpr std::array<double, 3> weights = {5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0};
    double sum = 0;
    for (size_t i = 0; i < nodes.size(); ++i) sum += weights[i] * basis(mid + half * nodes[i]);
    return sum * half;
  }

 protected:
  void do_scale_model_input(std::span<float> x, int index) const override {
    scale_by_sigma(x, sigmas()[static_cast<size_t>(index)]);
  }

  void do_step(std::span<const float> e, int index, std::span<float> x, NoiseGenerator&) override {
    const size_t n = x.size();
    const float sigma = sigmas()[static_cast<size_t>(index)];
    std::vector<float> d(n);
    denoised_from_sigma(config_.prediction_type, sigma, e, x, d);
    for (size_t i = 0; i < n; ++i) d[i] = (x[i] - d[i]) / sigma;
    derivatives_.push_back(std::move(d));
    if (derivatives_.size() > kLmsOrder) derivatives_.pop_front();

    const int order = std::min(index + 1, kLmsOrder);
    // sum(coeff * derivative for coeff, derivative in zip(coeffs, reversed(derivatives))): each
    // coefficient is a Python float applied to a float32 tensor, accumulated left to right. zip()
    // stops at the shorter list: image to image begins at index > 0 with fewer derivatives than
    // `order`, and diffusers then applies the first coefficients of the higher-order formula only.
    const int terms = std::min(order, static_cast<int>(derivatives_.size()));
    std::vector<float> acc(n, 0.0f);
    for (int j = 0; j < terms; ++j) {
      const auto c = static_cast<float>(lms_coefficient(order, index, j));
      const std::vector<float>& dj = derivatives_[derivatives_.size() - 1 - static_cast<size_t>(j)];
      if (j == 0) {
        for (size_t i = 0; i < n; ++i) acc[i] = c * dj[i];
      } else {
        for (size_t i = 0; i < n; ++i) acc[i] = acc[i] + c * dj[i];
      }
    }
    for (size_t i = 0; i < n; ++i) x[i] = x[i] + acc[i];
  }

 private:
  std::vector<float> train_sigmas_;
  std::deque<std::vector<float>> derivatives_;  // oldest first, at most kLmsOrder
};

}  // namespace

std::unique_ptr<Sampler> make_lms_sampler(SchedulerConfig config) {
  return std::make_unique<LmsSampler>(std::move(config));
}

double lms_coefficient_for_test(const Sampler& lms, int order, int t, int current) {
  const auto* s = dynamic_cast<const LmsSampler*>(&lms);
  OTTER_CHECK(s != nullptr, "lms_coefficient_for_test: not an LMS sampler");
  return s->lms_coefficient(order, t, current);
}

}  // namespace otter::detail

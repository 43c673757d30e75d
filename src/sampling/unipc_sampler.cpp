// UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), diffusers'
// UniPCMultistepScheduler with its defaults: data prediction (predict_x0), B(h) = e^h - 1
// ("bh2"), order 2, lower order at the end.
//
// Each step first corrects the sample the previous predictor produced, using the model output
// just computed at it (UniC, free: no extra evaluation), then predicts the next sample (UniP)
// from the current and earlier x0 predictions. Both solve a small linear system for their
// weights; order 1-2 predictors use the closed form rho = 1/2.
#include <algorithm>
#include <cmath>
#include <deque>

#include "core/error.h"
#include "sampling/sampler_common.h"
#include "sampling/torch_sleef_math.h"

namespace otter::detail {

namespace {

// torch.linalg.solve(A, b) for a small row-major float32 A, rounding step for rounding step.
// LAPACK reads the row-major buffer as column-major, i.e. sees M = A^T: it factors M = P L U
// (getrf: partial pivoting, first largest |pivot|) and solves A x = M^T x = b with the transposed
// factors (getrs 'T'): U^T y = b, L^T w = y, x = P w. Pivoting on A^T instead of A changes the
// last bits of the UniPC weights, and diffusers' latents follow them.
std::vector<float> torch_solve(const std::vector<float>& a, std::vector<float> b) {
  const size_t n = b.size();
  std::vector<float> m(n * n);  // M = A^T, row-major
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) m[i * n + j] = a[j * n + i];
  std::vector<size_t> pivot(n);
  for (size_t j = 0; j < n; ++j) {
    size_t p = j;
    for (size_t i = j + 1; i < n; ++i)
      if (std::abs(m[i * n + j]) > std::abs(m[p * n + j])) p = i;
    OTTER_CHECK(m[p * n + j] != 0.0f, "unipc: singular system for the solver weights");
    pivot[j] = p;
    if (p != j)
      for (size_t k = 0; k < n; ++k) std::swap(m[j * n + k], m[p * n + k]);
    const float inv = 1.0f / m[j * n + j];
    for (size_t i = j + 1; i < n; ++i) {
      const float l = m[i * n + j] * inv;
      m[i * n + j] = l;
      for (size_t k = j + 1; k < n; ++k) m[i * n + k] -= l * m[j * n + k];
    }
  }
  // U^T y = b (U = upper triangle of m, non-unit diagonal).
  for (size_t i = 0; i < n; ++i) {
    float t = b[i];
    for (size_t k = 0; k < i; ++k) t -= m[k * n + i] * b[k];
    b[i] = t / m[i * n + i];
  }
  // L^T w = y (L = strict lower triangle of m, unit diagonal).
  for (size_t i = n; i-- > 0;) {
    float t = b[i];
    for (size_t k = i + 1; k < n; ++k) t -= m[k * n + i] * b[k];
    b[i] = t;
  }
  // x = P w: undo the row interchanges in reverse order.
  for (size_t j = n; j-- > 0;) std::swap(b[j], b[pivot[j]]);
  return b;
}

float power(float x, int e) {
  switch (e) {
    case 0: return 1.0f;
    case 1: return x;
    case 2: return x * x;
    case 3: return x * x * x;
    default: return std::pow(x, static_cast<float>(e));
  }
}

// The quantities both UniP and UniC need for a step of size h with ratios rks (last = 1).
struct UniCoefficients {
  float h_phi_1;  // e^{-h} - 1
  float b_h;      // B(h)
  std::vector<float> r;  // R[i][k] = rks[k]^i, order x order, row-major
  std::vector<float> b;  // b[i] = phi_{i+1}(h) i! / B(h)
};

UniCoefficients uni_coefficients(float h, const std::vector<float>& rks, bool bh1) {
  const size_t order = rks.size();
  UniCoefficients c;
  const float hh = -h;  // data prediction
  c.h_phi_1 = torch_sleef::expm1(hh);
  float h_phi_k = c.h_phi_1 / hh - 1.0f;
  int factorial = 1;
  c.b_h = bh1 ? hh : torch_sleef::expm1(hh);
  for (size_t i = 1; i <= order; ++i) {
    for (size_t k = 0; k < order; ++k) c.r.push_back(power(rks[k], static_cast<int>(i) - 1));
    c.b.push_back(h_phi_k * static_cast<float>(factorial) / c.b_h);
    factorial *= static_cast<int>(i) + 1;
    h_phi_k = h_phi_k / hh - static_cast<float>(1.0 / factorial);
  }
  return c;
}

class UniPcSampler final : public Sampler {
 public:
  explicit UniPcSampler(SchedulerConfig c)
      : Sampler(std::move(c)), schedule_(make_training_schedule(config_, /*clamp_final_alpha=*/true)) {
    reject_thresholding(config_, "unipc");
    reject(!config_.predict_x0, "unipc", "\"predict_x0\": false (noise-prediction UniPC)");
    reject(config_.solver_p.has_value(), "unipc", "\"solver_p\" (an external predictor)");
    reject(config_.solver_type != "bh1" && config_.solver_type != "bh2", "unipc",
           cat("\"solver_type\": \"", config_.solver_type, "\""));
    reject(config_.solver_order < 1 || config_.solver_order > 3, "unipc",
           cat("\"solver_order\": ", config_.solver_order, " (1 to 3)"));
  }

  std::string name() const override { return "unipc"; }

  void set_timesteps(int n) override {
    const MultistepSchedule m = multistep_schedule(config_, n, schedule_, config_.num_train_timesteps);
    x0_history_.clear();
    last_sample_.clear();
    lower_order_nums_ = 0;
    this_order_ = 1;
    reset_schedule(to_float(m.timesteps), m.sigmas);
  }

 protected:
  void do_add_noise(std::span<const float> original, std::span<const float> noise, int index,
                    std::span<float> out) const override {
    add_noise_alpha_sigma(sigmas()[static_cast<size_t>(index)], original, noise, out);
  }

  void do_step(std::span<const float> e, int index, std::span<float> x, NoiseGenerator&) override {
    const size_t n = x.size();
    const int order_cfg = config_.solver_order;
    const auto& dc = config_.disable_corrector;
    const bool use_corrector =
        index > 0 && std::find(dc.begin(), dc.end(), index - 1) == dc.end() && !last_sample_.empty();

    const AlphaSigma s = alpha_sigma_from_sigma(sigma_at(index));
    std::vector<float> x0(n);
    for (size_t i = 0; i < n; ++i) {
      switch (config_.prediction_type) {
        case PredictionType::Epsilon: x0[i] = (x[i] - s.sigma * e[i]) / s.alpha; break;
        case PredictionType::Sample: x0[i] = e[i]; break;
        case PredictionType::VPrediction: x0[i] = s.alpha * x[i] - s.sigma * e[i]; break;
      }
    }
    if (use_corrector) correct(x0, index, x);

    x0_history_.push_back(std::move(x0));
    if (static_cast<int>(x0_history_.size()) > order_cfg) x0_history_.pop_front();
    int order = config_.lower_order_final ? std::min(order_cfg, num_evaluations() - index) : order_cfg;
    this_order_ = std::min(order, lower_order_nums_ + 1);
    last_sample_.assign(x.begin(), x.end());
    predict(index, x);
    if (lower_order_nums_ < order_cfg) ++lower_order_nums_;
  }

 private:
  float sigma_at(int i) const { return sigmas()[static_cast<size_t>(i)]; }
  // x0 prediction made `back` steps ago (0 = the latest stored).
  const std::vector<float>& x0_back(int back) const {
    return x0_history_[x0_history_.size() - 1 - static_cast<size_t>(back)];
  }

  // Ratios r_k = (lambda_{s_k} - lambda_{s0}) / h and differences D1_k = (m_k - m0) / r_k for
  // the older predictions m_k, k = 1 .. order-1, taken at step indices `first_older - (k-1)`.
  void history_terms(int order, int first_older, float lambda_s0, float h, std::vector<float>& rks,
                     std::vector<std::vector<float>>& d1s) const {
    const std::vector<float>& m0 = x0_back(0);
    for (int k = 1; k < order; ++k) {
      const float lambda_k = lambda_of(alpha_sigma_from_sigma(sigma_at(first_older - (k - 1))));
      const float rk = (lambda_k - lambda_s0) / h;
      rks.push_back(rk);
      const std::vector<float>& mk = x0_back(k);
      std::vector<float> d(m0.size());
      for (size_t i = 0; i < d.size(); ++i) d[i] = (mk[i] - m0[i]) / rk;
      d1s.push_back(std::move(d));
    }
    rks.push_back(1.0f);
  }

  // UniP: x_t from x_s0 = x (the current sample) and the stored x0 predictions.
  void predict(int index, std::span<float> x) const {
    const int order = this_order_;
    const AlphaSigma t = alpha_sigma_from_sigma(sigma_at(index + 1));
    const AlphaSigma s0 = alpha_sigma_from_sigma(sigma_at(index));
    const float lambda_s0 = lambda_of(s0);
    const float h = lambda_of(t) - lambda_s0;
    std::vector<float> rks;
    std::vector<std::vector<float>> d1s;
    history_terms(order, index - 1, lambda_s0, h, rks, d1s);
    const UniCoefficients c = uni_coefficients(h, rks, config_.solver_type == "bh1");

    std::vector<float> rhos;
    if (order == 2) {
      rhos = {0.5f};
    } else if (order > 2) {
      // R[:-1, :-1] rho = b[:-1]
      const auto m = static_cast<size_t>(order - 1);
      std::vector<float> sub;
      for (size_t i = 0; i < m; ++i)
        for (size_t k = 0; k < m; ++k) sub.push_back(c.r[i * static_cast<size_t>(order) + k]);
      rhos = torch_solve(sub, std::vector<float>(c.b.begin(), c.b.end() - 1));
    }
    const std::vector<float>& m0 = x0_back(0);
    const float ratio = t.sigma / s0.sigma;
    const float m0_coeff = t.alpha * c.h_phi_1;
    const float res_coeff = t.alpha * c.b_h;
    for (size_t i = 0; i < x.size(); ++i) {
      float v = ratio * x[i] - m0_coeff * m0[i];
      if (!d1s.empty()) {
        float pred_res = rhos[0] * d1s[0][i];
        for (size_t k = 1; k < d1s.size(); ++k) pred_res = pred_res + rhos[k] * d1s[k][i];
        v = v - res_coeff * pred_res;
      }
      x[i] = v;
    }
  }

  // UniC: re-derives the current sample x (which the last predictor produced from
  // last_sample_) using model_t, the x0 prediction just made at it.
  void correct(const std::vector<float>& model_t, int index, std::span<float> x) const {
    const int order = this_order_;
    const AlphaSigma t = alpha_sigma_from_sigma(sigma_at(index));
    const AlphaSigma s0 = alpha_sigma_from_sigma(sigma_at(index - 1));
    const float lambda_s0 = lambda_of(s0);
    const float h = lambda_of(t) - lambda_s0;
    std::vector<float> rks;
    std::vector<std::vector<float>> d1s;
    history_terms(order, index - 2, lambda_s0, h, rks, d1s);
    const UniCoefficients c = uni_coefficients(h, rks, config_.solver_type == "bh1");
    const std::vector<float> rhos = order == 1 ? std::vector<float>{0.5f} : torch_solve(c.r, c.b);

    const std::vector<float>& m0 = x0_back(0);
    const float ratio = t.sigma / s0.sigma;
    const float m0_coeff = t.alpha * c.h_phi_1;
    const float res_coeff = t.alpha * c.b_h;
    const float rho_t = rhos.back();
    for (size_t i = 0; i < x.size(); ++i) {
      const float base = ratio * last_sample_[i] - m0_coeff * m0[i];
      const float d1_t = model_t[i] - m0[i];
      float res = rho_t * d1_t;
      if (!d1s.empty()) {
        float corr = rhos[0] * d1s[0][i];
        for (size_t k = 1; k < d1s.size(); ++k) corr = corr + rhos[k] * d1s[k][i];
        res = corr + res;
      }
      x[i] = base - res_coeff * res;
    }
  }

  TrainingSchedule schedule_;
  std::deque<std::vector<float>> x0_history_;  // oldest first, at most solver_order
  std::vector<float> last_sample_;             // the sample the last predictor started from
  int lower_order_nums_ = 0;
  int this_order_ = 1;
};

}  // namespace

std::unique_ptr<Sampler> make_unipc_sampler(SchedulerConfig config) {
  return std::make_unique<UniPcSampler>(std::move(config));
}

}  // namespace otter::detail

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "guidance/guider_parts.h"

namespace otter::guider_detail {

bool is_close(double a, double b) { return std::fabs(a - b) <= 1e-9 * std::max(std::fabs(a), std::fabs(b)); }

void project(const Tensor& v0, const Tensor& v1, Tensor& parallel, Tensor& orthogonal) {
  OTTER_CHECK(v0.shape() == v1.shape() && v0.is_contiguous() && v1.is_contiguous(), "guider: projecting ",
              v0.describe(), " on ", v1.describe());
  parallel = Tensor::empty(v0.shape(), DType::F32);
  orthogonal = Tensor::empty(v0.shape(), DType::F32);
  const int64_t rows = v0.dim(0), n = v0.numel() / rows;
  for (int64_t b = 0; b < rows; ++b) {
    const float* a = v0.f32() + b * n;
    const float* c = v1.f32() + b * n;
    double norm = 0, dot = 0;
    for (int64_t i = 0; i < n; ++i) norm += static_cast<double>(c[i]) * c[i];
    norm = std::max(std::sqrt(norm), 1e-12);
    for (int64_t i = 0; i < n; ++i) dot += static_cast<double>(a[i]) * (c[i] / norm);
    for (int64_t i = 0; i < n; ++i) {
      const double par = dot * (c[i] / norm);
      parallel.f32()[b * n + i] = static_cast<float>(par);
      orthogonal.f32()[b * n + i] = static_cast<float>(static_cast<double>(a[i]) - par);
    }
  }
}

Tensor CfgFamilyGuider::guide(const GuiderStep&, const Tensor& c, const Tensor& u) {
  return guided(u, c, difference(c, u), p_.guidance_scale, p_.use_original_formulation);
}

void accumulate_momentum(Tensor& running, const Tensor& d, double momentum) {
  if (!running.defined()) running = Tensor::zeros(d.shape(), DType::F32);
  const float m = static_cast<float>(momentum);
  for (int64_t i = 0; i < d.numel(); ++i) {
    const float decayed = m * running.f32()[i];
    running.f32()[i] = d.f32()[i] + decayed;
  }
}

CfgParams read_cfg_params(const nlohmann::json& params, nlohmann::json& rest, double default_scale) {
  OTTER_CHECK(params.is_object() || params.is_null(), "guider parameters must be an object, got ", params.dump());
  rest = params.is_null() ? nlohmann::json::object() : params;
  CfgParams p;
  p.guidance_scale = take(rest, "guidance_scale", default_scale);
  p.guidance_rescale = take(rest, "guidance_rescale", 0.0);
  p.use_original_formulation = take(rest, "use_original_formulation", false);
  p.start = take(rest, "start", 0.0);
  p.stop = take(rest, "stop", 1.0);
  p.enabled = take(rest, "enabled", true);
  OTTER_CHECK(p.guidance_rescale >= 0.0 && p.guidance_rescale <= 1.0, "guidance_rescale must be in [0, 1], got ",
              p.guidance_rescale);
  OTTER_CHECK(p.start >= 0.0 && p.stop <= 1.0 && p.start <= p.stop,
              "start and stop are fractions of the steps with 0 <= start <= stop <= 1, got start=", p.start,
              " stop=", p.stop);
  return p;
}

void check_no_unknown(const std::string& guider, const nlohmann::json& rest) {
  if (rest.empty()) return;
  std::string keys;
  for (auto it = rest.begin(); it != rest.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
  throw Error(cat(guider, " has no parameter ", keys));
}

bool in_window(double start, double stop, const GuiderStep& s) {
  const int first = static_cast<int>(start * s.steps), end = static_cast<int>(stop * s.steps);
  return first <= s.step && s.step < end;
}

bool cfg_enabled(const CfgParams& p, const GuiderStep& s) {
  if (!p.enabled || !in_window(p.start, p.stop, s)) return false;
  return p.use_original_formulation ? !is_close(p.guidance_scale, 0.0) : !is_close(p.guidance_scale, 1.0);
}

double unbiased_stddev(const float* x, int64_t n) {
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  return std::sqrt(sq / static_cast<double>(n - 1));
}

Tensor rescale(const Tensor& x_in, const Tensor& ref_in, double r) {
  const Tensor x = x_in.contiguous(), ref = ref_in.contiguous();
  Tensor out = Tensor::empty(x.shape(), DType::F32);
  const int64_t rows = x.dim(0), n = x.numel() / rows;
  const float rf = static_cast<float>(r), one_minus = static_cast<float>(1.0 - r);
  for (int64_t b = 0; b < rows; ++b) {
    const float* px = x.f32() + b * n;
    float* po = out.f32() + b * n;
    const float ratio = static_cast<float>(unbiased_stddev(ref.f32() + b * n, n)) /
                        static_cast<float>(unbiased_stddev(px, n));
    for (int64_t i = 0; i < n; ++i) {
      const float resc = px[i] * ratio;
      const float a = rf * resc, c = one_minus * px[i];
      po[i] = a + c;
    }
  }
  return out;
}

Tensor difference(const Tensor& c_in, const Tensor& u_in) {
  OTTER_CHECK(c_in.shape() == u_in.shape(), "guider: cond ", c_in.describe(), " and uncond ", u_in.describe(),
              " predictions differ in shape");
  const Tensor c = c_in.contiguous(), u = u_in.contiguous();
  Tensor d = Tensor::empty(c.shape(), DType::F32);
  for (int64_t i = 0; i < c.numel(); ++i) d.f32()[i] = c.f32()[i] - u.f32()[i];
  return d;
}

Tensor guided(const Tensor& u_in, const Tensor& c_in, const Tensor& d_in, double scale, bool original) {
  const Tensor base = (original ? c_in : u_in).contiguous(), d = d_in.contiguous();
  Tensor out = Tensor::empty(d.shape(), DType::F32);
  const float s = static_cast<float>(scale);
  for (int64_t i = 0; i < d.numel(); ++i) {
    const float step = s * d.f32()[i];
    out.f32()[i] = base.f32()[i] + step;
  }
  return out;
}

}  // namespace otter::guider_detail

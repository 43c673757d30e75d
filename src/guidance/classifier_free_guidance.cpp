#include "guidance/classifier_free_guidance.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "guidance/guider_parts.h"  // unbiased_stddev

namespace otter {

Tensor concat_rows(const std::vector<const Tensor*>& parts) {
  std::vector<int64_t> shape = parts.at(0)->shape().to_vector();
  shape[0] = 0;
  for (const Tensor* p : parts) shape[0] += p->dim(0);
  Tensor out = Tensor::empty(Shape(shape), parts[0]->dtype());
  auto* dst = static_cast<char*>(out.raw());
  for (const Tensor* p : parts) {
    const Tensor c = p->contiguous();
    OTTER_CHECK(c.dtype() == out.dtype(), "concat_rows: rows of different dtypes");
    std::memcpy(dst, c.raw(), c.nbytes());
    dst += c.nbytes();
  }
  return out;
}

Tensor concat_rows(const Tensor& a, const Tensor& b) { return concat_rows({&a, &b}); }

Tensor combine_guidance(const Tensor& uncond_in, const Tensor& cond_in, float scale, float rescale) {
  OTTER_CHECK(uncond_in.shape() == cond_in.shape(), "guidance: uncond ", uncond_in.describe(), " and cond ",
              cond_in.describe(), " predictions differ in shape");
  const Tensor u = uncond_in.contiguous(), c = cond_in.contiguous();
  Tensor eps = Tensor::empty(c.shape(), DType::F32);
  const int64_t n = c.numel();
  const float* pu = u.f32();
  const float* pc = c.f32();
  float* pe = eps.f32();
  // Same order of float32 operations as diffusers: u + s * (c - u).
  for (int64_t i = 0; i < n; ++i) pe[i] = pu[i] + scale * (pc[i] - pu[i]);
  if (rescale > 0.0f) {
    const int64_t rows = c.dim(0), per_row = n / rows;
    for (int64_t r = 0; r < rows; ++r) {
      float* row = pe + r * per_row;
      const float ratio = static_cast<float>(guider_detail::unbiased_stddev(pc + r * per_row, per_row) /
                                           guider_detail::unbiased_stddev(row, per_row));
      for (int64_t i = 0; i < per_row; ++i) {
        const float rescaled = row[i] * ratio;
        row[i] = rescale * rescaled + (1.0f - rescale) * row[i];
      }
    }
  }
  return eps;
}

ClassifierFreeGuidance::ClassifierFreeGuidance(Tensor uncond, Tensor cond, GuidanceOptions options)
    : uncond_(std::move(uncond)), cond_(std::move(cond)), options_(std::move(options)) {
  OTTER_CHECK(uncond_.shape() == cond_.shape(), "guidance: unconditional embeddings ", uncond_.describe(),
              " and conditional ", cond_.describe(), " must have the same shape");
  OTTER_CHECK(options_.rescale >= 0.0f && options_.rescale <= 1.0f, "guidance rescale must be in [0, 1], got ",
              options_.rescale);
  if (options_.batching == CfgBatching::Batched) both_ = concat_rows(uncond_, cond_);
}

Tensor ClassifierFreeGuidance::predict(const Denoiser& model, const Tensor& x, float timestep, int step, int steps,
                                       float /*sigma*/) {
  const int64_t B = x.dim(0);
  OTTER_CHECK(B == cond_.dim(0), "guidance: ", B, " latent rows but ", cond_.dim(0), " prompt embeddings");
  const float scale = options_.schedule.at(step, steps);
  if (scale == 1.0f) {
    // u + 1·(c − u) = c: the unconditional rows would not change the result, so skip them.
    ++skipped_uncond_steps_;
    unet_rows_ += static_cast<uint64_t>(B);
    return model(x, timestep, cond_, nullptr);
  }
  unet_rows_ += static_cast<uint64_t>(2 * B);
  if (options_.batching == CfgBatching::Split) {
    const Tensor u = model(x, timestep, uncond_, nullptr);
    const Tensor c = model(x, timestep, cond_, nullptr);
    return combine_guidance(u, c, scale, options_.rescale);
  }
  const Tensor out = model(concat_rows(x, x), timestep, both_, nullptr);
  return combine_guidance(out.slice(0, 0, B), out.slice(0, B, 2 * B), scale, options_.rescale);
}

}  // namespace otter

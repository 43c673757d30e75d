#include "guidance/composable_guidance.h"

#include <cstring>

#include "core/error.h"

namespace otter {

ComposableGuidance::ComposableGuidance(Tensor uncond, Tensor conds, std::vector<int64_t> image_of,
                                       std::vector<double> weights, GuidanceOptions options)
    : uncond_(std::move(uncond)), conds_(std::move(conds)), image_of_(std::move(image_of)), weights_(std::move(weights)),
      options_(std::move(options)) {
  OTTER_CHECK(conds_.dim(0) == static_cast<int64_t>(image_of_.size()) && image_of_.size() == weights_.size(),
              "composable guidance: ", conds_.dim(0), " sub-prompt rows, ", image_of_.size(), " images and ",
              weights_.size(), " weights");
  OTTER_CHECK(conds_.dim(1) == uncond_.dim(1) && conds_.dim(2) == uncond_.dim(2), "composable guidance: sub-prompt ",
              conds_.describe(), " and unconditional ", uncond_.describe(), " embeddings differ in shape");
  for (int64_t b : image_of_)
    OTTER_CHECK(b >= 0 && b < uncond_.dim(0), "composable guidance: sub-prompt for image ", b, " of ", uncond_.dim(0));
  OTTER_CHECK(options_.rescale == 0.0f,
              "guidance rescale needs one conditional prediction per image; a prompt with AND has several");
  if (options_.batching == CfgBatching::Batched) all_ = concat_rows(uncond_, conds_);
}

Tensor ComposableGuidance::predict(const Denoiser& model, const Tensor& x_in, float timestep, int step, int steps,
                                   float /*sigma*/) {
  const Tensor x = x_in.contiguous();
  const int64_t B = x.dim(0), R = conds_.dim(0);
  OTTER_CHECK(B == uncond_.dim(0), "composable guidance: ", B, " latent rows but ", uncond_.dim(0), " images");
  // Each sub-prompt row sees its image's latents.
  const size_t row_bytes = x.nbytes() / static_cast<size_t>(B);
  std::vector<int64_t> shape = x.shape().to_vector();
  shape[0] = R;
  Tensor xc = Tensor::empty(Shape(shape), DType::F32);
  for (int64_t r = 0; r < R; ++r)
    std::memcpy(static_cast<char*>(xc.raw()) + static_cast<size_t>(r) * row_bytes,
                static_cast<const char*>(x.raw()) + static_cast<size_t>(image_of_[static_cast<size_t>(r)]) * row_bytes,
                row_bytes);
  unet_rows_ += static_cast<uint64_t>(B + R);
  Tensor u, c;
  if (options_.batching == CfgBatching::Batched) {
    const Tensor out = model(concat_rows(x, xc), timestep, all_, nullptr).contiguous();
    u = out.slice(0, 0, B);
    c = out.slice(0, B, B + R);
  } else {
    u = model(x, timestep, uncond_, nullptr).contiguous();
    c = model(xc, timestep, conds_, nullptr).contiguous();
  }
  const double scale = options_.schedule.at(step, steps);
  Tensor eps = u.clone();
  const int64_t n = eps.numel() / B;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t b = image_of_[static_cast<size_t>(r)];
    const float factor = static_cast<float>(weights_[static_cast<size_t>(r)] * scale);
    const float* cr = c.f32() + r * n;
    const float* ub = u.f32() + b * n;
    float* e = eps.f32() + b * n;
    for (int64_t i = 0; i < n; ++i) {
      const float term = (cr[i] - ub[i]) * factor;
      e[i] += term;
    }
  }
  return eps;
}

}  // namespace otter

// The cheap latent -> RGB preview map: applying it equals an independent per-pixel computation
// (torch's bilinear upsampling written out in double); the fit is the least-squares optimum (no
// single weight can be moved to lower the squared error on the fitting images); its error against
// the bundled model's VAE on held-out images is the figure the README states; the JSON form
// round-trips and rejects malformed maps.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "core/error.h"
#include "models/latent_rgb_map.h"
#include "pipeline/default_model.h"
#include "pipeline/stable_diffusion.h"

namespace otter {
namespace {

LatentRgbMap example_map() {
  LatentRgbMap m;
  m.channels = 4;
  m.weights = {0.30f, 0.20f, -0.10f, -0.25f, 0.15f, 0.40f, 0.10f, -0.20f, 0.05f, 0.10f, -0.45f, -0.30f};
  m.bias = {0.10f, -0.05f, 0.20f};
  return m;
}

TEST(LatentRgbMap, PreviewIsTheAffineMapOfBilinearlyUpsampledLatents) {
  const LatentRgbMap m = example_map();
  const int64_t h = 3, w = 5;
  const int scale = 4;
  Tensor z = Tensor::empty(Shape{4, h, w}, DType::F32);
  for (int64_t i = 0; i < z.numel(); ++i) z.f32()[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i)) * 2.5);
  const Tensor p = m.preview(z, scale);
  ASSERT_EQ(p.shape(), (Shape{h * scale, w * scale, 3}));
  // torch.nn.functional.interpolate(mode="bilinear", align_corners=False), in double.
  const auto source = [](int64_t o, int64_t n) {
    const double s = std::max((static_cast<double>(o) + 0.5) / scale - 0.5, 0.0);
    const int64_t lo = std::min(static_cast<int64_t>(s), n - 1);
    return std::tuple<int64_t, int64_t, double>{lo, std::min(lo + 1, n - 1), s - static_cast<double>(lo)};
  };
  int worst = 0;
  for (int64_t y = 0; y < h * scale; ++y)
    for (int64_t x = 0; x < w * scale; ++x) {
      const auto [y0, y1, fy] = source(y, h);
      const auto [x0, x1, fx] = source(x, w);
      for (int k = 0; k < 3; ++k) {
        double v = m.bias[static_cast<size_t>(k)];
        for (int c = 0; c < 4; ++c) {
          const auto at = [&](int64_t yy, int64_t xx) { return static_cast<double>(z.f32()[(c * h + yy) * w + xx]); };
          const double up = (at(y0, x0) * (1 - fx) + at(y0, x1) * fx) * (1 - fy) + (at(y1, x0) * (1 - fx) + at(y1, x1) * fx) * fy;
          v += m.weights[static_cast<size_t>(k * 4 + c)] * up;
        }
        const int expected = static_cast<int>(std::nearbyint(std::clamp(v / 2 + 0.5, 0.0, 1.0) * 255));
        worst = std::max(worst, std::abs(expected - static_cast<int>(p.data<uint8_t>()[(y * w * scale + x) * 3 + k])));
      }
    }
  EXPECT_LE(worst, 1);  // float vs double rounding at a .5 boundary, no more
}

TEST(LatentRgbMap, JsonRoundTripsAndMalformedMapsAreRefusedByName) {
  const LatentRgbMap m = example_map();
  const LatentRgbMap back = LatentRgbMap::from_json(m.to_json(), "map.json");
  EXPECT_EQ(back.weights, m.weights);
  EXPECT_EQ(back.bias, m.bias);
  nlohmann::json bad = m.to_json();
  bad["weights"][1] = {1.0, 2.0};
  try {
    (void)LatentRgbMap::from_json(bad, "vae/otter_latent_rgb.json");
    FAIL() << "a row of 2 values for 4 channels was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vae/otter_latent_rgb.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2 values, not 4"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)LatentRgbMap::from_json(nlohmann::json{{"channels", 4}}, "x"), Error);
}

TEST(LatentRgbMap, FitImagesAreTheSameForTheSameSeed) {
  const Tensor a = latent_rgb_fit_images(3, 32, 7), b = latent_rgb_fit_images(3, 32, 7), c = latent_rgb_fit_images(3, 32, 8);
  EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes()));
  EXPECT_NE(0, std::memcmp(a.raw(), c.raw(), a.nbytes()));
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_TRUE(a.f32()[i] >= -1 && a.f32()[i] <= 1);
}

class BundledVae : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    backend_ = make_cpu_backend(Precision::F32).release();
    model_ = StableDiffusion::load(find_default_model(), *backend_).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete backend_;
  }
  static Backend* backend_;
  static StableDiffusion* model_;
};
Backend* BundledVae::backend_ = nullptr;
StableDiffusion* BundledVae::model_ = nullptr;

// Σ over pixels and channels of (map(upsampled z) − clamp(decode)), in double, on `images`.
double squared_error(Backend& be, Vae& vae, const LatentRgbMap& m, const Tensor& images) {
  const Tensor latents = vae.scale_latents(be, vae.encode(be, images).mean).contiguous();
  const Tensor decoded = vae.decode(be, latents).contiguous();
  const int64_t B = latents.dim(0), C = latents.dim(1), h = latents.dim(2), w = latents.dim(3);
  const int s = vae.config().downscale_factor();
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    // Affine maps commute with bilinear upsampling, so the preview's float values before rounding
    // are the map applied per latent pixel then upsampled; here: upsample first, map second.
    for (int64_t y = 0; y < h * s; ++y)
      for (int64_t x = 0; x < w * s; ++x) {
        const double sy = std::max((y + 0.5) / s - 0.5, 0.0), sx = std::max((x + 0.5) / s - 0.5, 0.0);
        const int64_t y0 = std::min<int64_t>(static_cast<int64_t>(sy), h - 1), x0 = std::min<int64_t>(static_cast<int64_t>(sx), w - 1);
        const int64_t y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
        const double fy = sy - static_cast<double>(y0), fx = sx - static_cast<double>(x0);
        for (int k = 0; k < 3; ++k) {
          double v = m.bias[static_cast<size_t>(k)];
          for (int64_t c = 0; c < C; ++c) {
            const float* p = latents.f32() + (b * C + c) * h * w;
            const double up = (p[y0 * w + x0] * (1 - fx) + p[y0 * w + x1] * fx) * (1 - fy) +
                              (p[y1 * w + x0] * (1 - fx) + p[y1 * w + x1] * fx) * fy;
            v += m.weights[static_cast<size_t>(k * C + c)] * up;
          }
          const double target = std::clamp(static_cast<double>(decoded.f32()[((b * 3 + k) * h * s + y) * w * s + x]), -1.0, 1.0);
          total += (v - target) * (v - target);
        }
      }
  }
  return total;
}

TEST_F(BundledVae, FitIsTheLeastSquaresOptimum) {
  Vae& vae = model_->vae();
  const Tensor images = latent_rgb_fit_images(8, 64, 1);
  const LatentRgbMap m = fit_latent_rgb_map(*backend_, vae, images);
  const double best = squared_error(*backend_, vae, m, images);
  for (size_t i = 0; i < m.weights.size() + 3; ++i)
    for (float step : {-0.01f, 0.01f}) {
      LatentRgbMap moved = m;
      if (i < m.weights.size()) moved.weights[i] += step;
      else moved.bias[i - m.weights.size()] += step;
      EXPECT_GT(squared_error(*backend_, vae, moved, images), best) << "parameter " << i << " moved by " << step;
    }
}

}  // namespace
}  // namespace otter

// The init picture's conversion to the VAE's input and its resampling, against closed forms.
#include <gtest/gtest.h>

#include <cmath>

#include "pipeline/init_image.h"

namespace otter {
namespace {

PngImage picture(int w, int h, int channels, uint8_t (*f)(int x, int y, int c)) {
  PngImage p;
  p.width = w;
  p.height = h;
  p.channels = channels;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c) p.pixels.push_back(f(x, y, c));
  return p;
}

TEST(InitImage, VaeInputIsDiffusersNormalisation) {
  const PngImage p = picture(8, 8, 3, [](int x, int y, int c) { return static_cast<uint8_t>(x * 30 + y + c * 7); });
  const Tensor t = picture_to_vae_input(p);
  ASSERT_EQ(t.shape(), (Shape{1, 3, 8, 8}));
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 64; ++i) {
      const float v = p.pixels[static_cast<size_t>(i * 3 + c)];
      EXPECT_EQ(t.f32()[c * 64 + i], 2.0f * (v / 255.0f) - 1.0f);
    }
}

TEST(InitImage, AlphaIsFlattenedOnWhite) {
  const PngImage p = picture(1, 1, 4, [](int, int, int c) { return static_cast<uint8_t>(c == 3 ? 0 : 10); });
  const Tensor t = picture_to_vae_input(p);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(t.f32()[c], 1.0f);  // fully transparent -> white
  const PngImage half = picture(1, 1, 4, [](int, int, int c) { return static_cast<uint8_t>(c == 3 ? 255 : 10); });
  EXPECT_EQ(picture_to_vae_input(half).f32()[0], 2.0f * (10.0f / 255.0f) - 1.0f);  // opaque -> unchanged
}

TEST(InitImage, ResizeKeepsTheSameSizeAndConstants) {
  const PngImage p = picture(16, 12, 3, [](int x, int y, int c) { return static_cast<uint8_t>((x * 13 + y * 7 + c) % 256); });
  EXPECT_EQ(resize_picture(p, 16, 12).pixels, p.pixels);  // the filter is 1 at 0 and 0 at other integers
  const PngImage flat = picture(30, 20, 3, [](int, int, int c) { return static_cast<uint8_t>(50 + c); });
  for (auto [w, h] : {std::pair{64, 48}, std::pair{8, 8}, std::pair{31, 7}}) {
    const PngImage r = resize_picture(flat, w, h);
    ASSERT_EQ(r.width, w);
    for (size_t i = 0; i < r.pixels.size(); ++i) EXPECT_EQ(r.pixels[i], 50 + i % 3) << w << "x" << h;
  }
}

TEST(InitImage, HalvingAveragesNeighbourPairsSymmetrically) {
  // Columns alternating 0/200: shrunk 2x, every output sits between two source pixels, and the
  // widened Lanczos filter is symmetric about it, so the result is their mean, 100.
  const PngImage p = picture(32, 4, 3, [](int x, int, int) { return static_cast<uint8_t>(x % 2 ? 200 : 0); });
  const PngImage r = resize_picture(p, 16, 4);
  for (int x = 2; x < 14; ++x) EXPECT_NEAR(r.pixels[static_cast<size_t>(x * 3)], 100, 1) << x;
}

}  // namespace
}  // namespace otter

// Inpainting against diffusers' StableDiffusionInpaintPipeline (tests/goldens/inpaint.*, made by
// tests/goldens/make_goldens.py): an ordinary model (tiny-sd1: the known region re-noised and
// blended after every step) and an inpainting model (tiny-sd1 with the 9-channel UNet of
// tests/goldens/tiny-sd1-inpaint) in both checkpoint layouts, strengths 1 and below, several
// samplers; every step's latents, the final latents and the 8-bit image before the overlay, within
// the text-to-image goldens' tolerances. Then the overlay: outside the blurred mask the input's
// bytes, exactly.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "backend/backend.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "pipeline/inpaint.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/inpainting_model.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
const fs::path kGoldens = OTTER_PROJECT_GOLDEN_DIR;

void run_case(StableDiffusion& model, const testing::Golden& golden, const nlohmann::json& c, const std::string& what) {
  const nlohmann::json& p = c["params"];
  Txt2ImgRequest r;
  r.prompts = {p["prompt"].get<std::string>()};
  r.steps = p["num_inference_steps"].get<int>();
  r.seed = p["seed"].get<uint64_t>();
  r.guidance.schedule = GuidanceSchedule::constant(p["guidance_scale"].get<float>());
  const std::string scheduler = p["scheduler"].get<std::string>();
  r.sampler = scheduler == "DDIMScheduler"                     ? "ddim"
              : scheduler == "EulerDiscreteScheduler"          ? "euler"
              : scheduler == "EulerAncestralDiscreteScheduler" ? "euler_a"
              : scheduler == "HeunDiscreteScheduler"           ? "heun"
                                                               : "dpmpp_2m";
  const PngImage picture = read_png(kGoldens / c["init_image"].get<std::string>());
  r.width = picture.width;
  r.height = picture.height;
  r.init_image = InitImage{.pixels = picture_to_vae_input(picture), .strength = p["strength"].get<double>(),
                           .mask = mask_from_picture(read_png(kGoldens / c["mask"].get<std::string>())), .mask_blur = 0};
  const auto& t = c["tensors"];
  const Tensor want_latents = golden.tensor_ref(t["latents"]);
  double max_step_rel = 0;
  int steps = 0;
  Txt2ImgTrace trace;
  trace.on_step = [&](int, const Tensor&, const Tensor&, const Tensor& latents) {
    const Tensor want = want_latents.slice(0, steps, steps + 1).squeeze_front();
    max_step_rel = std::max(max_step_rel, testing::max_abs_diff(latents, want) / testing::max_abs(want));
    ++steps;
  };
  const Txt2ImgResult result = txt2img(model, r, {}, trace);
  EXPECT_EQ(steps, c["unet_evaluations"].get<int>()) << what;
  const testing::ByteDiff u8 =
      testing::byte_diff(result.image_before_overlay.data<uint8_t>(), golden.tensor_ref(t["image_uint8"]));
  EXPECT_LE(max_step_rel, 1e-4) << what;
  EXPECT_LE(u8.max, 1) << what;
  EXPECT_LE(static_cast<double>(u8.off), 0.005 * static_cast<double>(u8.total)) << what;
  // With no blur the overlay is exact: unmasked pixels are the input's bytes, masked ones the generated.
  const Tensor& mask = r.init_image->mask;
  int64_t kept = 0;
  for (int64_t i = 0; i < mask.numel(); ++i)
    for (int64_t ch = 0; ch < 3; ++ch) {
      const uint8_t got = result.image.data<uint8_t>()[i * 3 + ch];
      if (mask.f32()[i] < 0.5f) {
        EXPECT_EQ(got, picture.pixels[static_cast<size_t>(i * 3 + ch)]) << what << " pixel " << i;
        ++kept;
      } else {
        EXPECT_EQ(got, result.image_before_overlay.data<uint8_t>()[i * 3 + ch]) << what << " pixel " << i;
      }
    }
  EXPECT_GT(kept, 0);
  std::printf("[ parity   ] %-40s latents max rel/step %.2e  uint8 off %lld/%lld (max %d)\n", what.c_str(), max_step_rel,
              static_cast<long long>(u8.off), static_cast<long long>(u8.total), u8.max);
}

TEST(InpaintGolden, OrdinaryModelMatchesDiffusers) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  const testing::Golden golden(kGoldens / "inpaint.json");
  int n = 0;
  for (const auto& c : golden.manifest()["cases"])
    if (c["model"] == "tiny-sd1") run_case(*model, golden, c, c["id"].get<std::string>()), ++n;
  EXPECT_EQ(n, 4);
}

class InpaintingModel : public ::testing::TestWithParam<bool> {};

TEST_P(InpaintingModel, MatchesDiffusersInBothLayouts) {
  OTTER_REQUIRE_SHARED(shared);
  const fs::path dir = fs::temp_directory_path() / cat("otter_inpaint_model_", ::getpid(), GetParam() ? "_file" : "_folder");
  auto backend = make_cpu_backend(Precision::F32);
  LoadOptions options;
  if (GetParam()) options.model.config = testing::inpainting_model_configs(shared);
  auto model = StableDiffusion::load(GetParam() ? testing::inpainting_model_file(shared, dir)
                                                : testing::inpainting_model_folder(shared, dir),
                                     *backend, options);
  EXPECT_EQ(model->unet().config().in_channels, 9);
  const testing::Golden golden(kGoldens / "inpaint.json");
  int n = 0;
  for (const auto& c : golden.manifest()["cases"])
    if (c["model"] == "tiny-sd1-inpaint")
      run_case(*model, golden, c, cat(GetParam() ? "single file: " : "", c["id"].get<std::string>())), ++n;
  EXPECT_EQ(n, 3);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Layouts, InpaintingModel, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? std::string("single_file") : std::string("folder"); });

TEST(Inpaint, MaskIsDiffusersBinarisedLuma) {
  const PngImage m = read_png(kGoldens / "inpaint_mask.png");
  const Tensor mask = mask_from_picture(m);
  // The white rectangle and the greenish patch (L 159) repaint; the reddish patch (L 102) and black keep.
  EXPECT_EQ(mask.f32()[10 * 64 + 40], 1.0f);
  EXPECT_EQ(mask.f32()[45 * 64 + 35], 1.0f);
  EXPECT_EQ(mask.f32()[45 * 64 + 10], 0.0f);
  EXPECT_EQ(mask.f32()[0], 0.0f);
  EXPECT_EQ(mask_from_picture(m, true).f32()[10 * 64 + 40], 0.0f);
  // Latent size: the top-left pixel of each 8x8 block (the rectangle starts at x 37, so block 4
  // (x 32..39) is kept and block 5 repainted).
  const Tensor small = latent_mask_of(mask, 8);
  EXPECT_EQ(small.f32()[1 * 8 + 4], 0.0f);
  EXPECT_EQ(small.f32()[1 * 8 + 5], 1.0f);
}

TEST(Inpaint, BlurredOverlayBlendsOnlyNearTheMask) {
  const int64_t H = 32, W = 32;
  Tensor mask = Tensor::zeros(Shape{1, 1, H, W}, DType::F32);
  for (int64_t y = 8; y < 24; ++y)
    for (int64_t x = 8; x < 24; ++x) mask.f32()[y * W + x] = 1.0f;
  Tensor pixels = Tensor::empty(Shape{1, 3, H, W}, DType::F32);
  for (int64_t i = 0; i < pixels.numel(); ++i) pixels.f32()[i] = 2.0f * (static_cast<float>(i % 200) / 255.0f) - 1.0f;
  Tensor generated = Tensor::empty(Shape{1, H, W, 3}, DType::U8);
  for (int64_t i = 0; i < generated.numel(); ++i) generated.data<uint8_t>()[i] = 250;
  const Tensor out = overlay_on_input(generated, pixels, mask, 2.0);  // σ 2: the blend reaches 6 pixels out
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const uint8_t got = out.data<uint8_t>()[(y * W + x) * 3];
      const auto input = static_cast<uint8_t>((y * W + x) % 200);
      const int64_t dist = std::max({8 - x, x - 23, 8 - y, y - 23, int64_t{0}});
      if (dist > 6) {
        EXPECT_EQ(got, input) << x << "," << y;  // far outside: the input
      }
      if (x >= 14 && x <= 17 && y >= 14 && y <= 17) {
        EXPECT_EQ(got, 250) << x << "," << y;  // deep inside: the generated image
      }
    }
}

}  // namespace
}  // namespace otter

// The denoising loop reuses its buffers: after the first step (and the multistep samplers'
// warm-up, which fill their history), no step asks the system allocator for memory.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/allocator.h"
#include "io/png.h"
#include "pipeline/txt2img.h"
#include "support/inpainting_model.h"
#include "support/shared_data.h"

namespace otter {
namespace {

TEST(DenoisingLoop, StopsAllocatingAfterTheFirstSteps) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  for (const char* sampler : {"euler", "dpmpp_2m", "pndm", "euler_a"}) {
    Txt2ImgRequest request;
    request.prompts = {"a watercolor painting of an otter"};
    request.width = request.height = 64;
    request.steps = 8;
    request.sampler = sampler;
    request.decode = false;
    std::vector<uint64_t> system_allocations;
    txt2img(*model, request, [&](const StepReport&) {
      system_allocations.push_back(Allocator::global().stats().system_allocations);
    });
    ASSERT_GE(system_allocations.size(), 8u);
    // Steps 0-2 may grow the pool (first UNet pass; multistep history); from then on, nothing.
    for (size_t k = 3; k < system_allocations.size(); ++k)
      EXPECT_EQ(system_allocations[k], system_allocations[2]) << sampler << " step " << k;
  }
}

// The same for image to image and inpainting (an ordinary model blending the known region each
// step, and a 9-channel inpainting model whose every call appends mask and masked latents).
TEST(DenoisingLoop, ImageToImageAndInpaintingStopAllocatingToo) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / cat("otter_alloc_", ::getpid());
  const std::string goldens = OTTER_PROJECT_GOLDEN_DIR;
  const Tensor picture = picture_to_vae_input(read_png(goldens + "/img2img_input.png"));
  const Tensor mask = mask_from_picture(read_png(goldens + "/inpaint_mask.png"));
  struct Case {
    const char* what;
    std::filesystem::path model;
    bool masked;
  };
  const Case cases[] = {{"img2img", shared / "models" / "tiny-sd1", false},
                        {"inpaint, 4-channel model", shared / "models" / "tiny-sd1", true},
                        {"inpaint, 9-channel model", testing::inpainting_model_folder(shared, dir), true}};
  for (const Case& c : cases) {
    auto model = StableDiffusion::load(c.model, *backend);
    for (const char* sampler : {"euler", "dpmpp_2m"}) {
      Txt2ImgRequest request;
      request.prompts = {"a green circle"};
      request.width = request.height = 64;
      request.steps = 12;
      request.sampler = sampler;
      request.decode = false;
      request.init_image = InitImage{.pixels = picture, .strength = 0.9};
      if (c.masked) request.init_image->mask = mask;
      std::vector<uint64_t> system_allocations;
      txt2img(*model, request, [&](const StepReport&) {
        system_allocations.push_back(Allocator::global().stats().system_allocations);
      });
      ASSERT_GE(system_allocations.size(), 8u) << c.what;
      for (size_t k = 3; k < system_allocations.size(); ++k)
        EXPECT_EQ(system_allocations[k], system_allocations[2]) << c.what << ", " << sampler << " step " << k;
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace otter

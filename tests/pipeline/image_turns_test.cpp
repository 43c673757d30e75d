// Images run in turns (Txt2ImgRequest::max_batch, what the memory plan picks when all at once do
// not fit) are the images of the one-batch run, bit for bit, with every sampler: each turn starts
// from its rows of the one initial draw, and a stochastic sampler's noise is its rows of the draws
// the whole batch makes (euler_a, ddpm, ddim with eta > 0 would differ otherwise).
#include <gtest/gtest.h>

#include <cstring>

#include "backend/backend.h"
#include "pipeline/txt2img.h"
#include "sampling/sampler.h"
#include "support/shared_data.h"

namespace otter {
namespace {

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(ImageTurns, TurnsGiveTheOneBatchImagesWithEverySampler) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  for (std::string_view sampler : sampler_names()) {
    Txt2ImgRequest r;
    r.prompts = {"a watercolor painting of an otter", "a photo of a red fox"};
    r.negative_prompts = {"blurry"};
    r.images_per_prompt = 3;
    r.width = r.height = 64;
    r.steps = 4;
    r.sampler = std::string(sampler);
    if (sampler == "ddim") r.sampler_options.eta = 0.5;  // DDIM draws noise too
    r.seed = 11;
    r.guidance.schedule = GuidanceSchedule::constant(6.0f);
    const Txt2ImgResult whole = txt2img(*model, r);
    EXPECT_EQ(whole.turns, 1);
    for (int max_batch : {1, 4}) {
      r.max_batch = max_batch;
      const Txt2ImgResult turns = txt2img(*model, r);
      EXPECT_EQ(turns.turns, max_batch == 1 ? 6 : 2) << sampler;
      EXPECT_TRUE(same_bytes(turns.init_noise, whole.init_noise)) << sampler << " max_batch " << max_batch;
      EXPECT_TRUE(same_bytes(turns.final_latents, whole.final_latents)) << sampler << " max_batch " << max_batch;
      EXPECT_TRUE(same_bytes(turns.image, whole.image)) << sampler << " max_batch " << max_batch;
      EXPECT_EQ(turns.unet_rows, whole.unet_rows) << sampler;
    }
  }
}

}  // namespace
}  // namespace otter

// Txt2ImgRequest::release_weights_when_done (what `otter generate` asks for): the text encoder's
// prepared weights are given back after the encoding, the UNet's before the last turn's decode —
// and the images are the same bits as a run that keeps them; a model used again prepares them
// again and gives the same images once more. In every precision this CPU runs, since each one
// prepares its own layout (oneDNN's reorder, the 16-bit kernels' panels).
#include <gtest/gtest.h>

#include <cstring>

#include "backend/backend.h"
#include "core/allocator.h"
#include "core/cpu_features.h"
#include "pipeline/txt2img.h"
#include "support/shared_data.h"

namespace otter {
namespace {

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

Txt2ImgRequest request(int max_batch) {
  Txt2ImgRequest r;
  r.prompts = {"a watercolor painting of an otter"};
  r.images_per_prompt = 2;
  r.width = r.height = 64;
  r.steps = 3;
  r.sampler = "euler";
  r.seed = 5;
  r.max_batch = max_batch;
  r.guidance.schedule = GuidanceSchedule::constant(6.0f);
  return r;
}

TEST(ReleaseWeights, GivenBackWhenDoneAndTheImagesAreTheSame) {
  OTTER_REQUIRE_SHARED(shared);
  for (Precision precision : {Precision::F32, Precision::BF16, Precision::F16}) {
    // The 16-bit precisions where this CPU has their instructions (f32 always runs).
    if (precision == Precision::BF16 && !cpu_features().avx512_bf16) continue;
    if (precision == Precision::F16 && !cpu_features().avx512fp16) continue;
    auto backend = make_cpu_backend(precision);
    auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
    const size_t unet_layers = model->unet().prepared_weights().layers();
    const size_t text_layers = model->text_encoder().prepared_weights().layers();
    // Every linear layer is in its component's set: 6 in each CLIP layer (q, k, v, out, fc1, fc2).
    EXPECT_EQ(text_layers, 6u * static_cast<size_t>(model->text_encoder().config().num_hidden_layers));
    EXPECT_GT(unet_layers, 50u);

    for (int max_batch : {0, 1}) {  // one turn; two turns (the first decodes beside the UNet)
      Txt2ImgRequest r = request(max_batch);
      const Txt2ImgResult kept = txt2img(*model, r);
      EXPECT_EQ(model->unet().prepared_weights().held(), unet_layers);
      EXPECT_EQ(model->text_encoder().prepared_weights().held(), text_layers);

      r.release_weights_when_done = true;
      const Txt2ImgResult released = txt2img(*model, r);
      EXPECT_EQ(model->unet().prepared_weights().held(), 0u);
      EXPECT_EQ(model->text_encoder().prepared_weights().held(), 0u);
      EXPECT_EQ(released.turns, max_batch == 1 ? 2 : 1);
      EXPECT_TRUE(same_bytes(released.final_latents, kept.final_latents)) << precision_name(precision);
      EXPECT_TRUE(same_bytes(released.image, kept.image)) << precision_name(precision);

      // Used again: prepared again from the (still mapped) weights, same images.
      r.release_weights_when_done = false;
      const Txt2ImgResult again = txt2img(*model, r);
      EXPECT_EQ(model->unet().prepared_weights().held(), unet_layers);
      EXPECT_TRUE(same_bytes(again.image, kept.image)) << precision_name(precision);
    }
  }
}

// The text encoder's weights leave the process when it is done, not only the model: while the UNet
// runs, the allocator's cache holds no more than in a run that keeps them (where they are live).
// Given back into the cache, they waited there for blocks of their sizes, which the UNet never asks
// for: SD 1.5's f32 text encoder stayed resident through the denoising (0.34 GB).
TEST(ReleaseWeights, TextEncoderWeightsAreNotCachedThroughTheDenoising) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);  // oneDNN's weights come from the allocator
  size_t cached[2] = {0, 0};
  for (bool release : {false, true}) {
    auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
    Allocator::global().trim();
    Txt2ImgRequest r = request(0);
    r.release_weights_when_done = release;
    bool first = true;
    txt2img(*model, r, [&](const StepReport&) {
      if (first) cached[release] = Allocator::global().stats().cached_bytes;
      first = false;
    });
    ASSERT_FALSE(first);
  }
  EXPECT_GT(cached[0], 0u);  // the step's activations
  EXPECT_LE(cached[1], cached[0]);
}

}  // namespace
}  // namespace otter

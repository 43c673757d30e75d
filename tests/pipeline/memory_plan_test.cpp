// The memory plan's phases (src/pipeline/memory_plan.h) for SD 1.5's configs: which phase a run
// peaks in, as its log line names it.
#include <gtest/gtest.h>

#include <string>

#include "io/model_configs.h"
#include "pipeline/memory_plan.h"

namespace otter {
namespace {

MemoryPlanRequest sd15_request(bool encodes_image) {
  MemoryPlanRequest r;
  r.width = r.height = 256;
  r.precision = Precision::F32;
  r.releases_weights = true;  // as `otter generate`
  r.encodes_image = encodes_image;
  return r;
}

// Text to image never encodes a picture: no encode phase, so its peak is the UNet's (the weights
// of every component together, which that phase summed, are never resident at once). It named the
// "VAE encode's peak" for txt2img and put the estimate above the UNet's by the VAE decoder's weights.
TEST(MemoryPlan, TextToImageHasNoEncodePhase) {
  const MemoryPlan plan = plan_memory(builtin_configs(ModelFamily::SD1), sd15_request(false));
  EXPECT_EQ(plan.encode_phase(), 0.0);
  EXPECT_EQ(plan.peak(), plan.unet_phase());
  EXPECT_NE(plan.describe().find("at the UNet's peak"), std::string::npos) << plan.describe();
}

// Image to image encodes the init picture with every weight but the text encoder's resident.
TEST(MemoryPlan, ImageToImageCountsTheEncode) {
  const MemoryPlan plan = plan_memory(builtin_configs(ModelFamily::SD1), sd15_request(true));
  EXPECT_DOUBLE_EQ(plan.encode_phase(), plan.base + plan.runtime + plan.unet_weights + plan.vae_weights +
                                            plan.outputs + plan.vae_encode.total());
  EXPECT_GT(plan.vae_encode.total(), 0.0);
  EXPECT_GE(plan.peak(), plan.encode_phase());
}

}  // namespace
}  // namespace otter

// The denoising loop reuses its buffers: after the first step (and the multistep samplers'
// warm-up, which fill their history), no step asks the system allocator for memory.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/allocator.h"
#include "pipeline/txt2img.h"
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

}  // namespace
}  // namespace otter

// The rows otter-bench's table counts without running anything (planned_unet_rows) are the rows
// a real run evaluates, for every kind of method: classic CFG with a schedule reaching 1, guiders
// with windows, perturbed rows every step or in a window, auto-guidance, a sigma interval with a
// sigma-space and an alpha-space sampler, Heun's two evaluations per step, composable prompts.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "pipeline/txt2img.h"
#include "support/shared_data.h"

namespace otter {
namespace {

TEST(GuidanceRows, PlannedRowsAreTheRowsARunEvaluates) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  const struct {
    const char* prompt;
    const char* recipe;  // "" = classic CFG
    const char* schedule;
    const char* sampler;
  } cases[] = {
      {"an otter", "", "list:9,1,1,5,1,7", "ddim"},
      {"an otter", "cfg:scale=5,start=0.3,stop=0.8", "", "euler"},
      {"an otter", "pag:layers=mid", "", "ddim"},
      {"an otter", "PerturbedAttentionGuidance:perturbed_guidance_stop=0.6,layers=mid", "", "ddim"},
      {"an otter", "seg:scale=1,layers=[0]", "", "euler_a"},
      {"an otter", "slg:skip_layer_guidance_start=0,skip_layer_guidance_stop=1,layers=up.1", "", "heun"},
      {"an otter", "autoguidance:layers=mid", "", "ddim"},
      {"an otter", "cfg;interval=0.5..5", "", "euler"},
      {"an otter", "apg;interval=0.5..5", "", "ddim"},
      {"an otter", "cfg_pp:stop=0.5", "", "ddim"},
      {"an otter AND a hat :0.5 AND a boat", "", "", "heun"},
  };
  for (const auto& c : cases) {
    Txt2ImgRequest r;
    r.prompts = {c.prompt};
    r.width = r.height = 64;
    r.steps = 6;
    r.sampler = c.sampler;
    r.decode = false;
    if (*c.recipe) r.guider = GuidanceRecipe::parse(c.recipe);
    if (*c.schedule) r.guidance.schedule = GuidanceSchedule::parse(c.schedule);
    const PlannedRows planned = planned_unet_rows(r, model->scheduler_config());
    const Txt2ImgResult result = txt2img(*model, r);
    EXPECT_TRUE(planned.exact) << c.recipe;
    EXPECT_EQ(planned.evaluations, result.evaluations) << c.recipe;
    EXPECT_EQ(planned.rows, result.unet_rows) << c.prompt << " " << c.recipe << " " << c.sampler;
    EXPECT_EQ(planned.perturbed, result.perturbed_rows) << c.recipe << " " << c.sampler;
  }
}

}  // namespace
}  // namespace otter

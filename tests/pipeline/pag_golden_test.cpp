// Perturbed-attention guidance against diffusers 0.30.3's StableDiffusionPAGPipeline on tiny-sd1
// (../shared/golden/tiny-sd1_pag.json): `--guidance pag:…` runs rows [uncond, cond, perturbed] in
// one UNet call per step, the perturbed rows with identity self-attention in the chosen layers,
// and must give diffusers' guided prediction and latents at every step, its final latents and
// image. Tolerances as the other pipeline goldens (../shared/README.md section 5).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "backend/backend.h"
#include "pipeline/txt2img.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

GuidanceRecipe pag_recipe(const nlohmann::json& p) {
  GuidanceRecipe g;
  g.method = "pag";
  g.params = {{"guidance_scale", p["guidance_scale"]},
              {"pag_scale", p["pag_scale"]},
              {"pag_adaptive_scale", p["pag_adaptive_scale"]},
              {"pag_applied_layers", p["pag_applied_layers"]}};
  return g;
}

TEST(PagGolden, EveryCaseMatchesDiffusersPagPipeline) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  const testing::Golden golden(shared / "golden" / "tiny-sd1_pag.json");
  int cases = 0;
  for (const nlohmann::json& c : golden.manifest()["cases"]) {
    const std::string id = c["id"].get<std::string>();
    const nlohmann::json& p = c["params"];
    Txt2ImgRequest r;
    r.prompts = {p["prompt"].get<std::string>()};
    r.negative_prompts = {p["negative_prompt"].get<std::string>()};
    r.width = p["width"].get<int>();
    r.height = p["height"].get<int>();
    r.steps = p["num_inference_steps"].get<int>();
    r.seed = p["seed"].get<uint64_t>();
    r.guider = pag_recipe(p);
    r.sampler_options.eta = p["eta"].get<double>();
    nlohmann::json config = c["scheduler_config"];
    config["_class_name"] = p["scheduler"];
    r.scheduler_config = SchedulerConfig::from_json(config, p["scheduler"].get<std::string>());
    r.sampler = default_sampler_for(*r.scheduler_config);

    const auto& t = c["tensors"];
    const Tensor want_latents = golden.tensor_ref(t["latents"]), want_pred = golden.tensor_ref(t["noise_pred"]);
    double latents_rel = 0, pred_rel = 0;
    Txt2ImgTrace trace;
    trace.on_step = [&](int k, const Tensor&, const Tensor& noise_pred, const Tensor& latents) {
      const Tensor wl = want_latents.slice(0, k, k + 1).squeeze_front();
      const Tensor wp = want_pred.slice(0, k, k + 1).squeeze_front();
      latents_rel = std::max(latents_rel, testing::max_abs_diff(latents, wl) / testing::max_abs(wl));
      pred_rel = std::max(pred_rel, testing::max_abs_diff(noise_pred, wp) / testing::max_abs(wp));
    };
    const Txt2ImgResult result = txt2img(*model, r, {}, trace);
    EXPECT_EQ(testing::max_abs_diff(result.init_noise, golden.tensor_ref(t["init_noise"])), 0.0) << id;
    // One UNet call per step over all row groups: rows = evaluations x (uncond, cond, perturbed).
    const int64_t rows_per_eval = static_cast<int64_t>(c["batch_rows"].size());
    EXPECT_EQ(golden.tensor_ref(t["unet_out"]).dim(1), rows_per_eval) << id;
    EXPECT_EQ(result.unet_rows, static_cast<uint64_t>(c["unet_evaluations"].get<int>() * rows_per_eval)) << id;
    const Tensor want_final = golden.tensor_ref(t["final_latents"]);
    const double final_abs = testing::max_abs_diff(result.final_latents, want_final);
    const testing::ByteDiff u8 = testing::byte_diff(result.image.data<uint8_t>(), golden.tensor_ref(t["image_uint8"]));
    EXPECT_LE(latents_rel, 1e-4) << id;
    EXPECT_LE(pred_rel, 1e-4) << id;
    EXPECT_LE(final_abs, 1e-4 * testing::max_abs(want_final)) << id;
    EXPECT_LE(u8.max, 1) << id;
    EXPECT_LE(static_cast<double>(u8.off), 0.005 * static_cast<double>(u8.total)) << id;
    std::printf("[ pag      ] %-32s latents max rel/step %.2e  guided eps rel %.2e  final |d| %.2e  uint8 off %lld/%lld\n",
                id.c_str(), latents_rel, pred_rel, final_abs, static_cast<long long>(u8.off),
                static_cast<long long>(u8.total));
    ++cases;
  }
  EXPECT_EQ(cases, 4);
}

// The perturbation changes only the perturbed rows: with PAG in the 64x64 mid block (one token,
// where self-attention already is the identity) the run equals plain CFG bit for bit in its
// uncond/cond rows, and PAG at scale 0 is the plain pipeline (the golden's own checks).
TEST(PagGolden, OneTokenMidBlockIsPlainCfg) {
  OTTER_REQUIRE_SHARED(shared);
  auto backend = make_cpu_backend(Precision::F32);
  auto model = StableDiffusion::load(shared / "models" / "tiny-sd1", *backend);
  Txt2ImgRequest r;
  r.prompts = {"a watercolor painting of an otter"};
  r.width = r.height = 64;
  r.steps = 4;
  r.seed = 7;
  r.sampler = "ddim";
  r.decode = false;
  const Txt2ImgResult cfg = txt2img(*model, r);
  r.guider = GuidanceRecipe::parse("pag:layers=mid,pag_scale=3");
  const Txt2ImgResult pag = txt2img(*model, r);
  EXPECT_EQ(pag.unet_rows, 3u * 4u);
  // p = c exactly, so u + s(c − u) + 3(c − p) adds exactly 0.
  EXPECT_EQ(testing::max_abs_diff(pag.final_latents, cfg.final_latents), 0.0);
}

}  // namespace
}  // namespace otter

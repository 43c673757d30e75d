// Component outputs against the diffusers goldens with the models loaded through open_model from
// BOTH checkpoint layouts: the diffusers folder and the original single file (with --config).
// Tolerances from ../shared/README.md section 5: |Δ| <= 1e-4 (encoder mean 3e-4).
#include <gtest/gtest.h>

#include <cstdio>

#include "backend/backend.h"
#include "io/model_files.h"
#include "models/clip_text_encoder.h"
#include "models/unet.h"
#include "models/unet_config.h"
#include "models/vae.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

struct Layout {
  std::string model;
  bool single_file;
};

class ComponentsFromLayout : public ::testing::TestWithParam<Layout> {};

TEST_P(ComponentsFromLayout, MatchDiffusers) {
  OTTER_REQUIRE_SHARED(shared);
  const Layout layout = GetParam();
  ModelOptions options;
  std::filesystem::path path = shared / "models" / layout.model;
  if (layout.single_file) {
    options.config = {path};
    path += ".safetensors";
  }
  const ModelFiles files = open_model(path, options);
  const testing::Golden golden(shared / "golden" / (layout.model + "_components.json"));
  auto be = make_cpu_backend(Precision::F32);
  const std::string what = layout.model + (layout.single_file ? ".safetensors" : " folder");
  auto report = [&](const char* name, double err, double bound) {
    std::printf("[ layout   ] %-24s %-26s max |d| %.2e\n", what.c_str(), name, err);
    EXPECT_LE(err, bound) << what << " " << name;
  };

  // Text encoder.
  {
    const auto& c = golden.case_by_id("text_encoder");
    ClipTextEncoder te(ClipTextConfig::from_json(files.configs.text_encoder), *files.text_encoder, *be);
    const Tensor ids = golden.tensor_ref(c["inputs"]["input_ids"]);
    report("text_encoder last_hidden", testing::max_abs_diff(te.encode(ids).last_hidden_state,
                                                             golden.tensor_ref(c["outputs"]["last_hidden_state"])),
           1e-4);
  }
  // UNet at several timesteps, batch 2.
  {
    Weights w(*files.unet);
    UNet unet(UNetConfig::from_json(files.configs.unet), w);
    for (const char* id : {"unet/t999", "unet/t500", "unet/t1", "unet/t_fractional"}) {
      const auto& c = golden.case_by_id(id);
      const Tensor out = unet.forward(*be, golden.tensor_ref(c["inputs"]["sample"]), c["timestep"].get<float>(),
                                      golden.tensor_ref(c["inputs"]["encoder_hidden_states"]));
      report(id, testing::max_abs_diff(out, golden.tensor_ref(c["outputs"]["sample"])), 1e-4);
    }
  }
  // VAE decode and encode.
  {
    Weights w(*files.vae);
    Vae vae(VaeConfig::from_json(files.configs.vae), w);
    const auto& d = golden.case_by_id("vae/decode");
    report("vae decode", testing::max_abs_diff(vae.decode(*be, golden.tensor_ref(d["inputs"]["latents"])),
                                               golden.tensor_ref(d["outputs"]["sample"])),
           1e-4);
    const auto& e = golden.case_by_id("vae/encode");
    const LatentDistribution dist = vae.encode(*be, golden.tensor_ref(e["inputs"]["image"]));
    report("vae encode mean", testing::max_abs_diff(dist.mean, golden.tensor_ref(e["outputs"]["mean"])), 3e-4);
    report("vae encode logvar", testing::max_abs_diff(dist.logvar, golden.tensor_ref(e["outputs"]["logvar"])), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(BothLayouts, ComponentsFromLayout,
                         ::testing::Values(Layout{"tiny-sd1", false}, Layout{"tiny-sd1", true}, Layout{"tiny-sd2", false},
                                           Layout{"tiny-sd2", true}),
                         [](const auto& p) {
                           return (p.param.model == "tiny-sd1" ? std::string("sd1") : std::string("sd2")) +
                                  (p.param.single_file ? "_single_file" : "_folder");
                         });

}  // namespace
}  // namespace otter

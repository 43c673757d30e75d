// `otter generate --lora` and `otter info LORA` as a user runs them: the goldens' merged runs from
// the command line, a kohya file with the original checkpoints' UNet names giving the same image as
// its diffusers-named twin, the merge reaching the bf16 weights, the PNG record, and bad input
// (another model's LoRA, a layer the model lacks, not a LoRA, a pickle, a bad weight) refused with
// the fix and no file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/cpu_features.h"
#include "core/error.h"
#include "io/generation_parameters.h"
#include "io/ldm_key_map.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "run_otter.h"
#include "support/compare.h"
#include "support/golden.h"
#include "support/shared_data.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
using testing::contains;
const fs::path kGoldens = OTTER_PROJECT_GOLDEN_DIR;

class OtterLora : public testing::CliTest {
 protected:
  std::string model() const { return cat("-m '", (shared_ / "models" / "tiny-sd1").string(), "'"); }
  // The golden run's command line with `loras` (already "--lora …" arguments); returns final latents.
  Tensor run(const std::string& loras, const std::string& extra = "--precision f32", const std::string& model_args = "") {
    const fs::path latents = dir_ / "l.safetensors";
    const testing::OtterRun r = testing::run_otter(cat("generate ", model_args.empty() ? model() : model_args, " -p 'a green circle on a blue background' "
                                                       "--seed 5 --steps 8 --sampler euler ", extra, " ", loras,
                                                       " -q -o '", (dir_ / "l.png").string(), "' --save-latents '",
                                                       latents.string(), "'"));
    EXPECT_EQ(r.status, 0) << r.err;
    if (r.status != 0) return Tensor();
    return SafetensorsFile::open(latents).tensor("final_latents").contiguous().clone();
  }
  std::string lora(const std::string& file, const std::string& weight = "") const {
    return cat("--lora '", (kGoldens / file).string(), weight.empty() ? "" : ":" + weight, "'");
  }
};

TEST_F(OtterLora, CliMatchesTheMergedReference) {
  const testing::Golden golden(kGoldens / "lora.json");
  const Tensor got = run(lora("lora_tiny-sd1_kohya.safetensors", "0.8") + " " + lora("lora_tiny-sd1_peft.safetensors", "-0.5"));
  const Tensor want = golden.tensor("tiny-sd1/kohya0.8_peft-0.5/final_latents");
  ASSERT_TRUE(got.defined());
  EXPECT_LE(testing::max_abs_diff(got, want), 1e-4 * testing::max_abs(want));
  // The original single-file layout: the same merge.
  std::string single_file = cat("-m '", (shared_ / "models" / "tiny-sd1.safetensors").string(), "'");
  for (const char* c : {"text_encoder/config.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"})
    single_file += cat(" --config '", (shared_ / "models" / "tiny-sd1" / c).string(), "'");
  const Tensor from_file = run(lora("lora_tiny-sd1_kohya.safetensors", "0.8") + " " + lora("lora_tiny-sd1_peft.safetensors", "-0.5"),
                               "--precision f32", single_file);
  ASSERT_TRUE(from_file.defined());
  EXPECT_LE(testing::max_abs_diff(from_file, want), 1e-4 * testing::max_abs(want));
  // The PNG names the LoRAs, and --from asks for them again.
  const GenerationParameters p = parse_parameters(read_png(dir_ / "l.png").find_text("parameters").value());
  EXPECT_TRUE(contains(format_parameters(p), "LoRA: \"lora_tiny-sd1_kohya.safetensors:0.8, lora_tiny-sd1_peft.safetensors:-0.5\""))
      << format_parameters(p);
  const testing::OtterRun r = testing::run_otter(cat("generate ", model(), " --from '", (dir_ / "l.png").string(), "' -o '",
                                                     (dir_ / "again.png").string(), "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "give the same files with --lora FILE:WEIGHT")) << r.err;
}

// kohya files from trainers that use the original checkpoints' names (lora_unet_input_blocks_1_1_…)
// resolve through the same LDM table as single-file checkpoints: the same merge, the same bits.
TEST_F(OtterLora, OriginalUnetNamesResolveToTheSameLayers) {
  const SafetensorsFile src = SafetensorsFile::open(kGoldens / "lora_tiny-sd1_kohya.safetensors");
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(shared_ / "models" / "tiny-sd1" / "unet" / "config.json"));
  std::map<std::string, std::string> ldm_of;  // underscored diffusers module -> underscored LDM module
  for (const auto& [name, ref] : unet_ldm_key_map(config)) {
    if (name.size() < 7 || name.substr(name.size() - 7) != ".weight") continue;
    std::string d = name.substr(0, name.size() - 7), l = ref.key.substr(kLdmUnetPrefix.size());
    l = l.substr(0, l.size() - 7);
    for (char& c : d) c = c == '.' ? '_' : c;
    for (char& c : l) c = c == '.' ? '_' : c;
    ldm_of[d] = l;
  }
  std::vector<std::pair<std::string, Tensor>> renamed;
  int changed = 0;
  for (const std::string& key : src.names()) {
    std::string k = key;
    if (k.rfind("lora_unet_", 0) == 0) {
      const size_t dot = k.find('.');
      const auto it = ldm_of.find(k.substr(10, dot - 10));
      ASSERT_NE(it, ldm_of.end()) << key;
      changed += it->second != k.substr(10, dot - 10);
      k = "lora_unet_" + it->second + k.substr(dot);
    }
    renamed.emplace_back(k, src.tensor(key));
  }
  EXPECT_GT(changed, 100);
  write_safetensors(dir_ / "ldm_named.safetensors", renamed);
  const Tensor a = run(lora("lora_tiny-sd1_kohya.safetensors", "0.8"));
  const Tensor b = run(cat("--lora '", (dir_ / "ldm_named.safetensors").string(), ":0.8'"));
  ASSERT_TRUE(a.defined() && b.defined());
  EXPECT_EQ(testing::max_abs_diff(a, b), 0.0);
}

// The merge happens before the weights are prepared, so the 16-bit path runs the merged weights:
// bf16 with the LoRA lands far nearer f32 with it than f32 without it.
TEST_F(OtterLora, MergedWeightsReachTheBf16Path) {
  if (!cpu_features().avx512f) GTEST_SKIP() << "bf16 compute needs AVX-512 on this CPU";
  const Tensor f32_lora = run(lora("lora_tiny-sd1_kohya.safetensors", "0.8"));
  const Tensor f32_base = run("");
  const Tensor bf16_lora = run(lora("lora_tiny-sd1_kohya.safetensors", "0.8"), "--precision bf16");
  ASSERT_TRUE(f32_lora.defined() && f32_base.defined() && bf16_lora.defined());
  const double lora_effect = testing::max_abs_diff(f32_lora, f32_base);
  EXPECT_GT(lora_effect, 1.0);
  EXPECT_LT(testing::max_abs_diff(bf16_lora, f32_lora), 0.1 * lora_effect);
  // Unmerged, the low-rank layers run at bf16 beside the base weights: as near.
  const Tensor bf16_unmerged = run(lora("lora_tiny-sd1_kohya.safetensors", "0.8") + " --lora-unmerged", "--precision bf16");
  ASSERT_TRUE(bf16_unmerged.defined());
  EXPECT_LT(testing::max_abs_diff(bf16_unmerged, f32_lora), 0.1 * lora_effect);
}

TEST_F(OtterLora, InfoListsLayersRankAlphaAndFamily) {
  const testing::OtterRun r = testing::run_otter(cat("info '", (kGoldens / "lora_tiny-sd1_kohya.safetensors").string(), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* s : {"LoRA, kohya/webui layout, 289 layers", "UNet conv 3x3: 44", "text encoder linear: 18",
                        "rank: 4", "alpha: 2", "fits: a model with text width 32"})
    EXPECT_TRUE(contains(r.out, s)) << s << "\n" << r.out;
  const testing::OtterRun p = testing::run_otter(cat("info '", (kGoldens / "lora_tiny-sd1_peft.safetensors").string(), "'"));
  EXPECT_TRUE(contains(p.out, "diffusers/PEFT layout, 134 layers")) << p.out;
  EXPECT_TRUE(contains(p.out, "alpha: 2 (none in the file: alpha = rank")) << p.out;
}

TEST_F(OtterLora, BadInputFailsCleanlyWithoutFiles) {
  // A PEFT file with one layer the model does not have.
  const SafetensorsFile peft = SafetensorsFile::open(kGoldens / "lora_tiny-sd1_peft.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& k : peft.names()) tensors.emplace_back(k, peft.tensor(k));
  tensors.emplace_back("unet.down_blocks.9.attentions.0.to_q.lora_A.weight", peft.tensor(peft.names()[0]));
  tensors.emplace_back("unet.down_blocks.9.attentions.0.to_q.lora_B.weight", peft.tensor(peft.names()[1]));
  write_safetensors(dir_ / "extra_layer.safetensors", tensors);
  write_safetensors(dir_ / "not_lora.safetensors", {{"conv_in.weight", peft.tensor(peft.names()[0])}});
  { std::ofstream(dir_ / "style.ckpt") << "pickle"; }
  const fs::path out = dir_ / "out.png";
  const auto run_with = [&](const std::string& args, const std::string& m) {
    return testing::run_otter(cat("generate ", m, " -p a --steps 2 ", args, " -o '", out.string(), "'"));
  };
  const std::pair<std::string, std::string> cases[] = {
      {cat("--lora '", (dir_ / "extra_layer.safetensors").string(), "'"),
       "1 of 135 layers name tensors this model does not have: unet.down_blocks.9.attentions.0.to_q; it was made for "
       "another model, or add --lora-lenient"},
      {cat("--lora '", (dir_ / "not_lora.safetensors").string(), "'"), "is not part of a LoRA layer"},
      {cat("--lora '", (dir_ / "style.ckpt").string(), "'"), "a pickle file; otter loads LoRAs from .safetensors only"},
      {lora("lora_tiny-sd1_kohya.safetensors", "strong"), "'strong' is not a weight; write FILE or FILE:WEIGHT"},
      {cat("--lora '", (dir_ / "missing.safetensors").string(), "'"), "missing.safetensors"},
  };
  for (const auto& [args, message] : cases) {
    const testing::OtterRun r = run_with(args, model());
    EXPECT_NE(r.status, 0) << args;
    EXPECT_TRUE(contains(r.err, message)) << args << ": " << r.err;
    EXPECT_FALSE(fs::exists(out)) << args;
  }
  // Another model's LoRA (the tiny model's on the bundled one): the layer, both shapes, the fix.
  testing::OtterRun r = run_with(lora("lora_tiny-sd1_kohya.safetensors"), "");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "does not fit the model's")) << r.err;
  EXPECT_TRUE(contains(r.err, "the LoRA was made for another model")) << r.err;
  EXPECT_FALSE(fs::exists(out));
  // --lora-lenient applies the layers that exist and says which it skipped.
  r = run_with(cat("--lora '", (dir_ / "extra_layer.safetensors").string(), "' --lora-lenient"), model());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "(skipped: --lora-lenient)")) << r.err;
  EXPECT_TRUE(fs::exists(out));
}

}  // namespace
}  // namespace otter

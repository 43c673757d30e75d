// LoRA files as read (both layouts, every malformed shape of a layer refused with the file and the
// tensor named) and FILE[:WEIGHT] as typed. A parser test: the asan preset runs it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "io/lora.h"
#include "io/safetensors.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
const fs::path kGoldens = OTTER_PROJECT_GOLDEN_DIR;

TEST(LoraFile, ReadsBothLayouts) {
  const LoraFile kohya = read_lora(kGoldens / "lora_tiny-sd1_kohya.safetensors");
  EXPECT_EQ(kohya.format, LoraFormat::Kohya);
  EXPECT_EQ(kohya.layers.size(), 289u);
  int conv3 = 0, text = 0;
  for (const LoraLayer& l : kohya.layers) {
    EXPECT_EQ(l.rank, 4);
    EXPECT_EQ(l.alpha, 2.0);
    conv3 += l.down.rank() == 4 && l.down.dim(2) == 3;
    text += l.component == "text_encoder";
  }
  EXPECT_EQ(conv3, 44);
  EXPECT_EQ(text, 18);
  const LoraFile peft = read_lora(kGoldens / "lora_tiny-sd1_peft.safetensors");
  EXPECT_EQ(peft.format, LoraFormat::Peft);
  EXPECT_EQ(peft.layers.size(), 134u);
  EXPECT_EQ(peft.layers[0].alpha, 2.0);  // no alpha in the file: alpha = rank
  EXPECT_TRUE(is_lora_file(kGoldens / "lora_tiny-sd1_peft.safetensors"));
}

TEST(LoraFile, AttentionProcessorNamesBecomeModuleNames) {
  const fs::path f = fs::temp_directory_path() / cat("otter_lora_proc_", ::getpid(), ".safetensors");
  const Tensor a = Tensor::zeros(Shape{2, 8}, DType::F32), b = Tensor::zeros(Shape{8, 2}, DType::F32);
  write_safetensors(f, {{"unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight", a},
                        {"unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight", b},
                        {"text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight", a},
                        {"text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.up.weight", b}});
  const LoraFile lora = read_lora(f);
  ASSERT_EQ(lora.layers.size(), 2u);
  EXPECT_EQ(lora.layers[0].module, "text_model.encoder.layers.0.self_attn.q_proj");
  EXPECT_EQ(lora.layers[1].module, "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0");
  fs::remove(f);
}

TEST(LoraFile, MalformedLayersAreNamed) {
  const fs::path f = fs::temp_directory_path() / cat("otter_lora_bad_", ::getpid(), ".safetensors");
  const Tensor down = Tensor::zeros(Shape{4, 8}, DType::F32), up = Tensor::zeros(Shape{8, 4}, DType::F32);
  const std::string k = "lora_unet_mid_block_attentions_0_proj_in";
  const std::pair<std::vector<std::pair<std::string, Tensor>>, std::string> cases[] = {
      {{{k + ".lora_down.weight", down}}, "has a down matrix but no up matrix"},
      {{{k + ".lora_down.weight", down}, {k + ".lora_up.weight", Tensor::zeros(Shape{8, 3}, DType::F32)}}, "does not match down"},
      {{{k + ".lora_down.weight", down}, {k + ".lora_up.weight", up}, {k + ".alpha", Tensor::zeros(Shape{2}, DType::F32)}},
       "an alpha is one number"},
      {{{k + ".lora_down.weight", down}, {k + ".lora_up.weight", up}, {"unet.x.lora_A.weight", down}, {"unet.x.lora_B.weight", up}},
       "mixes kohya"},
      {{{"model.diffusion_model.x.weight", down}}, "is not part of a LoRA layer"},
      {{{k + ".hada_w1_a", down}}, "LyCORIS/DoRA"},
      {{{"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", down}}, "SDXL's second text encoder"},
      {{{k + ".lora_down.weight", Tensor::zeros(Shape{4, 8, 3}, DType::F32)}, {k + ".lora_up.weight", up}},
       "expected [rank, in] and [out, rank]"},
  };
  for (const auto& [tensors, message] : cases) {
    write_safetensors(f, tensors);
    try {
      (void)read_lora(f);
      ADD_FAILURE() << message << ": read";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(f.string()), std::string::npos) << "names the file: " << e.what();
    }
  }
  fs::remove(f);
  EXPECT_THROW(read_lora(fs::temp_directory_path() / "style.ckpt"), Error);
}

TEST(LoraFile, SpecsAreFileAndWeight) {
  EXPECT_EQ(LoraSpec::parse("style.safetensors:0.8").weight, 0.8);
  EXPECT_EQ(LoraSpec::parse("style.safetensors:0.8").path, "style.safetensors");
  EXPECT_EQ(LoraSpec::parse("style.safetensors:-1.5").weight, -1.5);
  EXPECT_EQ(LoraSpec::parse("style.safetensors").weight, 1.0);
  EXPECT_EQ(LoraSpec::parse("dir/style.safetensors:0.8").to_string(), "style.safetensors:0.8");
  EXPECT_THROW(LoraSpec::parse("style.safetensors:strong"), Error);
  EXPECT_THROW(LoraSpec::parse("style.safetensors:inf"), Error);
}

}  // namespace
}  // namespace otter

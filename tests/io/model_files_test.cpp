// Opening SD checkpoints: the tiny models of ../shared in both layouts (diffusers folder and
// original single file hold bit-identical weights, so the LDM key map is checked tensor by
// tensor), the real SD 1.5 / 2.1 configs (parameter counts), and every refusal and error path.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <unistd.h>

#include "core/error.h"
#include "io/checkpoint_format.h"
#include "io/component_tensors.h"
#include "io/ldm_key_map.h"
#include "io/model_files.h"
#include "io/remapped_source.h"
#include "io/safetensors.h"
#include "support/shared_data.h"
#include "support/temp_dir.h"

namespace otter {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using otter::testing::TempDir;

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

void write_json(const fs::path& p, const json& j) { write_text(p, j.dump(2)); }

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool has_note(const ModelFiles& m, const std::string& needle) {
  for (const std::string& n : m.notes)
    if (n.find(needle) != std::string::npos) return true;
  return false;
}

// Sum of the element counts of the tensors the model uses (what `otter info` reports).
int64_t used_parameters(const TensorSource& src, const std::vector<TensorSpec>& specs) {
  int64_t total = 0;
  for (const TensorSpec& s : specs) total += src.get(s.name).numel();
  return total;
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw(), cb.raw(), ca.nbytes()) == 0;
}

// A diffusers folder made of links to a tiny model's parts, so a test can replace one part.
fs::path linked_folder(const fs::path& tiny, const fs::path& dir, const std::vector<std::string>& skip = {}) {
  for (const auto& e : fs::directory_iterator(tiny)) {
    const std::string name = e.path().filename().string();
    if (std::find(skip.begin(), skip.end(), name) == skip.end()) fs::create_symlink(e.path(), dir / name);
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------

TEST(ModelFiles, OpensTinyModelsInBothLayouts) {
  OTTER_REQUIRE_SHARED(shared);
  const fs::path models = shared / "models";
  struct Case {
    fs::path path;
    std::vector<fs::path> config;
    ModelFamily family;
    std::string prediction;
    CheckpointLayout layout;
  };
  const Case cases[] = {
      {models / "tiny-sd1", {}, ModelFamily::SD1, "epsilon", CheckpointLayout::DiffusersFolder},
      {models / "tiny-sd2", {}, ModelFamily::SD2, "v_prediction", CheckpointLayout::DiffusersFolder},
      {models / "tiny-sd1.safetensors", {models / "tiny-sd1"}, ModelFamily::SD1, "epsilon", CheckpointLayout::SingleFile},
      {models / "tiny-sd2.safetensors", {models / "tiny-sd2"}, ModelFamily::SD2, "v_prediction",
       CheckpointLayout::SingleFile},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path.string());
    ModelOptions opts;
    opts.config = c.config;
    const auto t0 = std::chrono::steady_clock::now();
    const ModelFiles m = open_model(c.path, opts);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "[ load time ] " << c.path.filename().string() << ": " << ms << " ms\n";
    EXPECT_EQ(m.family, c.family);
    EXPECT_EQ(m.prediction_type, c.prediction);
    EXPECT_EQ(m.configs.scheduler["prediction_type"], c.prediction);
    EXPECT_EQ(m.layout, c.layout);
    EXPECT_TRUE(has_note(m, c.family == ModelFamily::SD1 ? "detected SD 1.x" : "detected SD 2.x"));
    ASSERT_TRUE(m.text_encoder && m.unet && m.vae);
    // The tokenizer folder and SD2's "!" padding come from the model / --config folder.
    ASSERT_TRUE(m.configs.tokenizer_dir.has_value());
    EXPECT_TRUE(fs::is_regular_file(*m.configs.tokenizer_dir / "vocab.json"));
    EXPECT_EQ(m.configs.special_tokens["pad_token"], c.family == ModelFamily::SD1 ? "<|endoftext|>" : "!");
    // Configs are complete: the tiny values, nothing lost.
    EXPECT_EQ(m.configs.unet["norm_num_groups"], 8);
    EXPECT_EQ(m.configs.text_encoder["hidden_act"], c.family == ModelFamily::SD1 ? "quick_gelu" : "gelu");
    EXPECT_EQ(m.configs.vae["scaling_factor"], 0.18215);
  }
}

// The README says the single files hold the folders' weights, renamed: so every diffusers
// tensor must come out of the key map with the same shape, dtype and bytes, and the key map
// must read every tensor of the single file except the known-unused OpenCLIP ones.
TEST(ModelFiles, SingleFileMapsToDiffusersBitForBit) {
  OTTER_REQUIRE_SHARED(shared);
  for (const std::string tiny : {"tiny-sd1", "tiny-sd2"}) {
    SCOPED_TRACE(tiny);
    const fs::path folder = shared / "models" / tiny;
    ModelOptions opts;
    opts.config = {folder};
    const ModelFiles diffusers = open_model(folder);
    const ModelFiles single = open_model(shared / "models" / (tiny + ".safetensors"), opts);

    size_t compared = 0;
    std::set<std::string> keys_read;
    const std::pair<const TensorSource*, const TensorSource*> parts[] = {
        {diffusers.text_encoder.get(), single.text_encoder.get()},
        {diffusers.unet.get(), single.unet.get()},
        {diffusers.vae.get(), single.vae.get()},
    };
    for (const auto& [ref, got] : parts) {
      std::vector<std::string> ref_names = ref->names(), got_names = got->names();
      std::sort(ref_names.begin(), ref_names.end());
      std::sort(got_names.begin(), got_names.end());
      EXPECT_EQ(ref_names, got_names) << "the single file exposes different names than " << ref->origin();
      for (const std::string& name : ref_names) {
        ASSERT_TRUE(got->has(name)) << name;
        EXPECT_TRUE(bit_identical(ref->get(name), got->get(name))) << name << " differs between the layouts";
        const auto* remapped = dynamic_cast<const RemappedSource*>(got);
        ASSERT_NE(remapped, nullptr);
        keys_read.insert(remapped->source_key(name).value_or(""));
        ++compared;
      }
    }
    EXPECT_EQ(compared, tiny == "tiny-sd1" ? 53u + 684u + 244u : 52u + 684u + 244u);

    // Every tensor of the file was read, except the OpenCLIP parts SD 2.x does not use.
    std::vector<std::string> unread;
    for (const std::string& k : SafetensorsFile::open(shared / "models" / (tiny + ".safetensors")).names())
      if (!keys_read.count(k)) unread.push_back(k);
    if (tiny == "tiny-sd1") {
      EXPECT_TRUE(unread.empty()) << unread.size() << " unread, first " << unread.front();
    } else {
      for (const std::string& k : unread)
        EXPECT_TRUE(k == "cond_stage_model.model.text_projection" || k == "cond_stage_model.model.logit_scale" ||
                    k.rfind("cond_stage_model.model.transformer.resblocks.3.", 0) == 0)
            << k;
      EXPECT_EQ(unread.size(), 12u + 2u);  // resblock 3 (12 tensors), text_projection, logit_scale
      EXPECT_TRUE(has_note(single, "3 of the 4 OpenCLIP resblocks are used"));
      EXPECT_FALSE(has_note(single, "assuming v-prediction"));  // the --config folder's scheduler says so
    }
  }
}

// Renamed tensors are views of the mapped file: the VAE's 1x1 conv weights reshaped to
// Linear, OpenCLIP's fused q/k/v split by rows - no copies.
TEST(ModelFiles, RemappedTensorsAreZeroCopyViews) {
  OTTER_REQUIRE_SHARED(shared);
  ModelOptions opts;
  opts.config = {shared / "models" / "tiny-sd2"};
  const ModelFiles m = open_model(shared / "models" / "tiny-sd2.safetensors", opts);
  const auto& vae = dynamic_cast<const RemappedSource&>(*m.vae);
  const Tensor q = vae.get("encoder.mid_block.attentions.0.to_q.weight");
  const Tensor stored = vae.file().tensor("first_stage_model.encoder.mid.attn_1.q.weight");
  EXPECT_EQ(stored.shape(), Shape({32, 32, 1, 1}));
  EXPECT_EQ(q.shape(), Shape({32, 32}));
  EXPECT_EQ(q.raw(), stored.raw());

  const auto& te = dynamic_cast<const RemappedSource&>(*m.text_encoder);
  const Tensor fused = te.file().tensor("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight");
  const Tensor k = te.get("text_model.encoder.layers.1.self_attn.k_proj.weight");
  const Tensor vb = te.get("text_model.encoder.layers.1.self_attn.v_proj.bias");
  const Tensor fused_bias = te.file().tensor("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias");
  EXPECT_EQ(k.shape(), Shape({32, 32}));
  EXPECT_EQ(k.raw(), static_cast<const void*>(fused.data<float>() + 32 * 32));
  EXPECT_EQ(vb.raw(), static_cast<const void*>(fused_bias.data<float>() + 64));
  EXPECT_TRUE(k.is_contiguous());
}

TEST(ModelFiles, ParameterCountsAgreeBetweenLayoutsAndConfigs) {
  OTTER_REQUIRE_SHARED(shared);
  for (const std::string tiny : {"tiny-sd1", "tiny-sd2"}) {
    SCOPED_TRACE(tiny);
    const fs::path folder = shared / "models" / tiny;
    ModelOptions opts;
    opts.config = {folder};
    const ModelFiles a = open_model(folder);
    const ModelFiles b = open_model(shared / "models" / (tiny + ".safetensors"), opts);
    const auto te = text_encoder_tensor_specs(a.configs.text_encoder);
    const auto unet = unet_tensor_specs(a.configs.unet);
    const auto vae = vae_tensor_specs(a.configs.vae);
    EXPECT_EQ(used_parameters(*a.text_encoder, te), used_parameters(*b.text_encoder, te));
    EXPECT_EQ(used_parameters(*a.unet, unet), used_parameters(*b.unet, unet));
    EXPECT_EQ(used_parameters(*a.vae, vae), used_parameters(*b.vae, vae));

    // Independent of the specs: every non-buffer tensor of the folder's files, summed.
    for (const auto& [src, count] : {std::pair{a.text_encoder.get(), count_text_encoder_parameters(a.configs.text_encoder)},
                                     std::pair{a.unet.get(), count_unet_parameters(a.configs.unet)},
                                     std::pair{a.vae.get(), count_vae_parameters(a.configs.vae)}}) {
      int64_t total = 0;
      for (const std::string& n : src->names())
        if (!is_buffer_tensor(n)) total += src->get(n).numel();
      EXPECT_EQ(total, count) << src->origin();
    }
  }
}

// The built-in configs must describe the real models exactly; these are the parameter counts
// of diffusers' SD 1.5 / SD 2.1 components.
TEST(ModelFiles, RealConfigsGiveTheRealParameterCounts) {
  const ModelConfigs sd1 = builtin_configs(ModelFamily::SD1);
  EXPECT_EQ(count_unet_parameters(sd1.unet), 859520964);
  EXPECT_EQ(count_text_encoder_parameters(sd1.text_encoder), 123060480);
  EXPECT_EQ(count_vae_parameters(sd1.vae), 83653863);
  const ModelConfigs sd2 = builtin_configs(ModelFamily::SD2);
  EXPECT_EQ(count_unet_parameters(sd2.unet), 865910724);
  EXPECT_EQ(count_text_encoder_parameters(sd2.text_encoder), 340387840);
  EXPECT_EQ(count_vae_parameters(sd2.vae), 83653863);
  EXPECT_EQ(sd2.scheduler["prediction_type"], "v_prediction");
  EXPECT_EQ(sd1.scheduler["_class_name"], "PNDMScheduler");
}

// The real layouts' index arithmetic: a few well-known SD 1.5 keys.
TEST(ModelFiles, RealSd15KeyMapSpotChecks) {
  const ModelConfigs sd1 = builtin_configs(ModelFamily::SD1);
  const LdmKeyMap unet = unet_ldm_key_map(sd1.unet);
  EXPECT_EQ(unet.at("down_blocks.1.attentions.1.proj_in.weight").key, "model.diffusion_model.input_blocks.5.1.proj_in.weight");
  EXPECT_EQ(unet.at("down_blocks.2.downsamplers.0.conv.bias").key, "model.diffusion_model.input_blocks.9.0.op.bias");
  EXPECT_EQ(unet.at("down_blocks.3.resnets.1.time_emb_proj.weight").key,
            "model.diffusion_model.input_blocks.11.0.emb_layers.1.weight");
  EXPECT_EQ(unet.at("up_blocks.0.upsamplers.0.conv.weight").key, "model.diffusion_model.output_blocks.2.1.conv.weight");
  EXPECT_EQ(unet.at("up_blocks.2.upsamplers.0.conv.weight").key, "model.diffusion_model.output_blocks.8.2.conv.weight");
  EXPECT_EQ(unet.at("up_blocks.3.resnets.2.conv_shortcut.weight").key,
            "model.diffusion_model.output_blocks.11.0.skip_connection.weight");
  EXPECT_EQ(unet.at("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight").key,
            "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight");
  EXPECT_EQ(unet.at("time_embedding.linear_2.bias").key, "model.diffusion_model.time_embed.2.bias");
  EXPECT_EQ(unet.size(), unet_tensor_specs(sd1.unet).size());
  const LdmKeyMap vae = vae_ldm_key_map(sd1.vae);
  EXPECT_EQ(vae.at("decoder.up_blocks.0.resnets.2.conv1.weight").key, "first_stage_model.decoder.up.3.block.2.conv1.weight");
  EXPECT_EQ(vae.at("decoder.up_blocks.2.upsamplers.0.conv.weight").key,
            "first_stage_model.decoder.up.1.upsample.conv.weight");
  EXPECT_EQ(vae.count("decoder.up_blocks.3.upsamplers.0.conv.weight"), 0u);  // the last level keeps its size
  EXPECT_EQ(vae.at("encoder.mid_block.attentions.0.to_out.0.weight").key,
            "first_stage_model.encoder.mid.attn_1.proj_out.weight");
  EXPECT_EQ(vae.at("decoder.conv_norm_out.bias").key, "first_stage_model.decoder.norm_out.bias");
  const LdmKeyMap te = openclip_ldm_key_map(builtin_configs(ModelFamily::SD2).text_encoder);
  EXPECT_EQ(te.size(), 2u + 23u * 16u + 2u);
  EXPECT_EQ(te.at("text_model.encoder.layers.22.self_attn.v_proj.weight").row_begin, 2048);
  EXPECT_TRUE(openclip_key_is_unused("cond_stage_model.model.transformer.resblocks.23.ln_1.weight",
                                     builtin_configs(ModelFamily::SD2).text_encoder));
  EXPECT_FALSE(openclip_key_is_unused("cond_stage_model.model.transformer.resblocks.22.ln_1.weight",
                                      builtin_configs(ModelFamily::SD2).text_encoder));
}

TEST(ModelFiles, RefusesPickleCheckpointsWithAnExplanation) {
  TempDir dir("pickle");
  const fs::path ckpt = dir.path() / "model.ckpt";
  write_text(ckpt, "PK\x03\x04 not really a zip");
  const std::string msg = error_of([&] { open_model(ckpt); });
  EXPECT_NE(msg.find("pickle"), std::string::npos) << msg;
  EXPECT_NE(msg.find("runs Python code"), std::string::npos) << msg;
  EXPECT_NE(msg.find("from safetensors.torch import save_file"), std::string::npos) << msg;
  EXPECT_NE(msg.find((dir.path() / "model.safetensors").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("convert_original_stable_diffusion_to_diffusers.py"), std::string::npos) << msg;

  // Content decides too: a pickle or a torch zip renamed to .safetensors is still refused.
  const fs::path zip = dir.path() / "renamed.safetensors";
  write_text(zip, std::string("PK\x03\x04", 4) + std::string(40, 'x'));
  EXPECT_NE(error_of([&] { open_model(zip); }).find("zip archive written by torch.save"), std::string::npos);
  const fs::path pkl = dir.path() / "renamed2.safetensors";
  write_text(pkl, std::string("\x80\x02\x7d\x71\x00", 5) + std::string(40, 'x'));
  EXPECT_NE(error_of([&] { open_model(pkl); }).find("pickle stream"), std::string::npos);
  for (const char* ext : {".pt", ".PTH", ".bin"}) EXPECT_TRUE(has_pickle_extension(std::string("a") + ext));
  EXPECT_FALSE(has_pickle_extension("a.safetensors"));
}

TEST(ModelFiles, RefusesDiffusersBinWeights) {
  OTTER_REQUIRE_SHARED(shared);
  TempDir dir("bin");
  linked_folder(shared / "models" / "tiny-sd1", dir.path(), {"unet"});
  fs::create_directories(dir.path() / "unet");
  fs::create_symlink(shared / "models" / "tiny-sd1" / "unet" / "config.json", dir.path() / "unet" / "config.json");
  write_text(dir.path() / "unet" / "diffusion_pytorch_model.bin", std::string("\x80\x02", 2));
  const std::string msg = error_of([&] { open_model(dir.path()); });
  EXPECT_NE(msg.find("diffusion_pytorch_model.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("safe_serialization=True"), std::string::npos) << msg;
}

TEST(ModelFiles, MissingConfigNamesTheFileAndTheFix) {
  OTTER_REQUIRE_SHARED(shared);
  TempDir dir("noconfig");
  linked_folder(shared / "models" / "tiny-sd1", dir.path(), {"scheduler"});
  const std::string msg = error_of([&] { open_model(dir.path()); });
  EXPECT_NE(msg.find("scheduler/scheduler_config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.path().string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("--config"), std::string::npos) << msg;

  // ... and --config supplies it.
  ModelOptions opts;
  opts.config = {shared / "models" / "tiny-sd1" / "scheduler" / "scheduler_config.json"};
  EXPECT_EQ(open_model(dir.path(), opts).configs.scheduler["_class_name"], "PNDMScheduler");

  // Unreadable config: not JSON.
  TempDir bad("badconfig");
  linked_folder(shared / "models" / "tiny-sd1", bad.path(), {"vae"});
  fs::create_directories(bad.path() / "vae");
  fs::create_symlink(shared / "models" / "tiny-sd1" / "vae" / "diffusion_pytorch_model.safetensors",
                     bad.path() / "vae" / "diffusion_pytorch_model.safetensors");
  write_text(bad.path() / "vae" / "config.json", "{ \"_class_name\": ");
  const std::string bad_msg = error_of([&] { open_model(bad.path()); });
  EXPECT_NE(bad_msg.find("vae/config.json' is not valid JSON"), std::string::npos) << bad_msg;

  // Not a model folder at all.
  EXPECT_NE(error_of([&] { open_model(dir.path() / "unet"); }).find("without model_index.json"), std::string::npos);
}

TEST(ModelFiles, SingleFileNeedsConfigWhenNotARealArchitecture) {
  OTTER_REQUIRE_SHARED(shared);
  // Without --config the built-in SD 1.5 architecture applies, which the tiny file is not.
  const std::string msg = error_of([&] { open_model(shared / "models" / "tiny-sd1.safetensors"); });
  EXPECT_NE(msg.find("does not match the built-in SD 1.x architecture (SD 1.5)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pass --config"), std::string::npos) << msg;
  EXPECT_NE(msg.find("conv_in.weight has shape [16, 4, 3, 3], expected [320, 4, 3, 3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing down_blocks.2.resnets.0.conv_shortcut.weight [1280, 640, 1, 1] (stored as "
                     "model.diffusion_model.input_blocks.7.0.skip_connection.weight)"),
            std::string::npos)
      << msg;

  // A config of the other family is refused before any tensor is compared.
  ModelOptions wrong;
  wrong.config = {shared / "models" / "tiny-sd1"};
  const std::string fam = error_of([&] { open_model(shared / "models" / "tiny-sd2.safetensors", wrong); });
  EXPECT_NE(fam.find("SD 2.x text encoder"), std::string::npos) << fam;
}

TEST(ModelFiles, UnexpectedTensorIsReported) {
  OTTER_REQUIRE_SHARED(shared);
  TempDir dir("unexpected");
  const SafetensorsFile src = SafetensorsFile::open(shared / "models" / "tiny-sd1.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& n : src.names()) tensors.emplace_back(n, src.tensor(n));
  tensors.emplace_back("model.diffusion_model.input_blocks.1.1.extra_gate.weight", Tensor::full({16}, 1.0f));
  tensors.emplace_back("model_ema.decay", Tensor::full({}, 0.9999f));  // outside the model: only a note
  write_safetensors(dir.path() / "extra.safetensors", tensors);
  ModelOptions opts;
  opts.config = {shared / "models" / "tiny-sd1"};
  const std::string msg = error_of([&] { open_model(dir.path() / "extra.safetensors", opts); });
  EXPECT_NE(msg.find("1 unexpected tensor(s)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.diffusion_model.input_blocks.1.1.extra_gate.weight"), std::string::npos) << msg;

  // The same check on a diffusers folder.
  TempDir folder("unexpected_folder");
  linked_folder(shared / "models" / "tiny-sd1", folder.path(), {"vae"});
  fs::create_directories(folder.path() / "vae");
  fs::create_symlink(shared / "models" / "tiny-sd1" / "vae" / "config.json", folder.path() / "vae" / "config.json");
  const SafetensorsFile vae = SafetensorsFile::open(shared / "models" / "tiny-sd1" / "vae" / "diffusion_pytorch_model.safetensors");
  std::vector<std::pair<std::string, Tensor>> vt;
  for (const std::string& n : vae.names()) vt.emplace_back(n, vae.tensor(n));
  vt.emplace_back("decoder.extra.bias", Tensor::full({3}, 0.0f));
  write_safetensors(folder.path() / "vae" / "diffusion_pytorch_model.safetensors", vt);
  const std::string fmsg = error_of([&] { open_model(folder.path()); });
  EXPECT_NE(fmsg.find("unexpected tensor(s)"), std::string::npos) << fmsg;
  EXPECT_NE(fmsg.find("decoder.extra.bias"), std::string::npos) << fmsg;
}

TEST(ModelFiles, WrongShapeAndMissingTensorsAreReported) {
  OTTER_REQUIRE_SHARED(shared);
  TempDir dir("shape");
  // An inpainting-style config (9 input channels) against a 4-channel file: wrong shape.
  json unet = read_json(shared / "models" / "tiny-sd1" / "unet" / "config.json");
  unet["in_channels"] = 9;
  write_json(dir.path() / "unet9.json", unet);
  ModelOptions opts;
  opts.config = {shared / "models" / "tiny-sd1", dir.path() / "unet9.json"};
  const std::string msg = error_of([&] { open_model(shared / "models" / "tiny-sd1.safetensors", opts); });
  EXPECT_NE(msg.find("does not match the UNet config: of its 684 tensors, 0 are missing and 1 have another shape"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("conv_in.weight has shape [16, 4, 3, 3], expected [16, 9, 3, 3]"), std::string::npos) << msg;

  // Three resnets per level where the file has two: missing tensors, named both ways.
  unet["in_channels"] = 4;
  unet["layers_per_block"] = 3;
  write_json(dir.path() / "unet3.json", unet);
  opts.config = {shared / "models" / "tiny-sd1", dir.path() / "unet3.json"};
  const std::string missing = error_of([&] { open_model(shared / "models" / "tiny-sd1.safetensors", opts); });
  EXPECT_NE(missing.find("does not match the UNet config"), std::string::npos) << missing;
  EXPECT_NE(missing.find("missing down_blocks.0.resnets.2.norm1.weight [16] (stored as "
                         "model.diffusion_model.input_blocks.3.0.in_layers.0.weight)"),
            std::string::npos)
      << missing;
}

TEST(ModelFiles, PredictionTypeOverrideAndSd2Assumption) {
  OTTER_REQUIRE_SHARED(shared);
  const fs::path sd2 = shared / "models" / "tiny-sd2";
  ModelOptions eps;
  eps.prediction = "eps";
  const ModelFiles m = open_model(sd2, eps);
  EXPECT_EQ(m.prediction_type, "epsilon");
  EXPECT_EQ(m.configs.scheduler["prediction_type"], "epsilon");
  EXPECT_TRUE(has_note(m, "from --prediction"));

  // A single SD 2.x file whose scheduler config is the built-in one: v-prediction is a guess,
  // and the user is told how to change it.
  ModelOptions guess;
  guess.config = {sd2 / "unet" / "config.json", sd2 / "vae" / "config.json", sd2 / "text_encoder" / "config.json"};
  const ModelFiles g = open_model(shared / "models" / "tiny-sd2.safetensors", guess);
  EXPECT_EQ(g.prediction_type, "v_prediction");
  EXPECT_TRUE(has_note(g, "assuming v-prediction")) << g.notes.front();
  EXPECT_FALSE(g.configs.tokenizer_dir.has_value());  // no folder given: tokenizer comes from elsewhere
  EXPECT_EQ(g.configs.special_tokens["pad_token"], "!");

  EXPECT_EQ(parse_prediction_type("v"), "v_prediction");
  EXPECT_EQ(parse_prediction_type("epsilon"), "epsilon");
  EXPECT_NE(error_of([] { parse_prediction_type("x0"); }).find("use eps"), std::string::npos);
}

TEST(ModelFiles, WeightVariantSelection) {
  OTTER_REQUIRE_SHARED(shared);
  const fs::path tiny = shared / "models" / "tiny-sd1";
  TempDir dir("variant");
  linked_folder(tiny, dir.path(), {"unet"});
  fs::create_directories(dir.path() / "unet");
  fs::create_symlink(tiny / "unet" / "config.json", dir.path() / "unet" / "config.json");
  // Only a variant file: used, with a note.
  fs::create_symlink(tiny / "unet" / "diffusion_pytorch_model.safetensors",
                     dir.path() / "unet" / "diffusion_pytorch_model.fp16.safetensors");
  ModelFiles only = open_model(dir.path());
  EXPECT_TRUE(has_note(only, "using diffusion_pytorch_model.fp16.safetensors (the only weights there)"));
  EXPECT_NE(only.unet->origin().find(".fp16.safetensors"), std::string::npos);
  // Both: fp32 unless the variant is asked for.
  fs::create_symlink(tiny / "unet" / "diffusion_pytorch_model.safetensors",
                     dir.path() / "unet" / "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(open_model(dir.path()).unet->origin().find(".fp16."), std::string::npos);
  ModelOptions fp16;
  fp16.variant = "fp16";
  EXPECT_NE(open_model(dir.path(), fp16).unet->origin().find(".fp16.safetensors"), std::string::npos);
  // A requested variant that is absent falls back, saying so.
  ModelOptions ema;
  ema.variant = "ema";
  EXPECT_TRUE(has_note(open_model(dir.path(), ema), "no ema variant"));
}

TEST(ModelFiles, LegacyVaeAttentionNamesAreRead) {
  OTTER_REQUIRE_SHARED(shared);
  const fs::path tiny = shared / "models" / "tiny-sd1";
  TempDir dir("legacyvae");
  linked_folder(tiny, dir.path(), {"vae"});
  fs::create_directories(dir.path() / "vae");
  fs::create_symlink(tiny / "vae" / "config.json", dir.path() / "vae" / "config.json");
  const SafetensorsFile vae = SafetensorsFile::open(tiny / "vae" / "diffusion_pytorch_model.safetensors");
  const std::pair<std::string, std::string> legacy[] = {
      {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (std::string n : vae.names()) {
    Tensor t = vae.tensor(n);
    for (const auto& [from, to] : legacy)
      if (auto p = n.find(from); p != std::string::npos) n.replace(p, from.size(), to);
    tensors.emplace_back(n, t);
  }
  write_safetensors(dir.path() / "vae" / "diffusion_pytorch_model.safetensors", tensors);
  const ModelFiles m = open_model(dir.path());
  EXPECT_TRUE(has_note(m, "legacy attention names"));
  EXPECT_TRUE(bit_identical(m.vae->get("decoder.mid_block.attentions.0.to_out.0.weight"),
                            vae.tensor("decoder.mid_block.attentions.0.to_out.0.weight")));
}

TEST(ModelFiles, NonCheckpointSafetensorsIsExplained) {
  OTTER_REQUIRE_SHARED(shared);
  const std::string msg =
      error_of([&] { open_model(shared / "models" / "tiny-sd1" / "unet" / "diffusion_pytorch_model.safetensors"); });
  EXPECT_NE(msg.find("one component of a diffusers folder"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { open_model(shared / "models" / "nope"); }).find("does not exist"), std::string::npos);
}

TEST(ModelFiles, ConfigClassification) {
  EXPECT_EQ(classify_config(json{{"_class_name", "UNet2DConditionModel"}}), ConfigKind::Unet);
  EXPECT_EQ(classify_config(json{{"_class_name", "AutoencoderKL"}}), ConfigKind::Vae);
  EXPECT_EQ(classify_config(json{{"_class_name", "EulerDiscreteScheduler"}}), ConfigKind::Scheduler);
  EXPECT_EQ(classify_config(json{{"model_type", "clip_text_model"}}), ConfigKind::TextEncoder);
  EXPECT_EQ(classify_config(json{{"architectures", {"CLIPTextModel"}}}), ConfigKind::TextEncoder);
  EXPECT_FALSE(classify_config(json{{"_class_name", "ControlNetModel"}}).has_value());
  // Unsupported architectures are refused by name.
  json sdxl = builtin_configs(ModelFamily::SD1).unet;
  sdxl["addition_embed_type"] = "text_time";
  const std::string msg = error_of([&] { unet_tensor_specs(sdxl); });
  EXPECT_NE(msg.find("'addition_embed_type'"), std::string::npos) << msg;
}

}  // namespace
}  // namespace otter

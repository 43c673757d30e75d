#pragma once
// LoRA files (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): low-rank
// updates W' = W + weight · (alpha / rank) · up · down of a model's linear and conv layers, in the
// two layouts people share them in:
//
//   kohya / webui    lora_unet_<module with _ for .>.lora_down.weight, .lora_up.weight, .alpha
//                    lora_te_<text encoder module>…     (UNet modules named as in diffusers, or as
//                    in the original checkpoints: lora_unet_input_blocks_1_1_proj_in)
//   diffusers / PEFT unet.<module>.lora_A.weight, .lora_B.weight (also .lora.down/.lora.up and the
//                    older attention-processor names …attn1.processor.to_q_lora.down.weight);
//                    text_encoder.<module>…; no alpha in the file means alpha = rank
//
// down is [rank, in] or [rank, in, kh, kw], up is [out, rank] or [out, rank, 1, 1]. Layers are
// resolved against the model's own tensor names (the same table for every layout), so a layer the
// model lacks, or one of another shape (a LoRA for another model family), is named in the error.
#include <filesystem>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/model_files.h"

namespace otter {

enum class LoraFormat { Kohya, Peft };
const char* lora_format_name(LoraFormat f);

struct LoraLayer {
  std::string key;        // the file's name for the layer ("lora_unet_down_blocks_0_…_to_q")
  std::string component;  // "unet" or "text_encoder"
  std::string module;     // as named in the file, dots restored where the layout has them
  Tensor down, up;        // views of the mapped file
  int64_t rank = 0;
  double alpha = 0;       // = rank when the file has none
};

struct LoraFile {
  std::filesystem::path path;
  LoraFormat format = LoraFormat::Kohya;
  std::vector<LoraLayer> layers;
};

// Whether a .safetensors file's tensor names are a LoRA's (every key of either layout).
bool is_lora_file(const std::filesystem::path& path);

// Reads and checks the file's structure (pairs complete, ranks agree, alphas scalar); throws
// otter::Error naming the file and the tensor.
LoraFile read_lora(const std::filesystem::path& path);

// What `otter info LORA` prints: format, layers per component and kind, ranks, alphas, and the
// model family its shapes fit (text width 768: SD 1.x; 1024: SD 2.x; two text encoders: SDXL).
std::string describe_lora(const LoraFile& lora);

// One LoRA to apply: FILE[:WEIGHT] as given on the command line.
struct LoraSpec {
  std::filesystem::path path;
  double weight = 1.0;
  static LoraSpec parse(const std::string& text);  // "style.safetensors:0.8"; throws for a bad weight
  std::string to_string() const;                   // "style.safetensors:0.8"
};
// "a.safetensors:0.8, b.safetensors:-0.5": what a PNG records (and the server's model key).
std::string describe_loras(const std::vector<LoraSpec>& loras);

// Each layer's target is the model's diffusers tensor ("down_blocks.0.….to_q.weight"), found in the
// model's own names (for kohya files also the original checkpoints' UNet names, via the LDM table).
// Replaces model.unet and model.text_encoder by sources that return every updated weight merged
// (base + Σ weight·alpha/rank·up·down, computed in f32/double, stored in the checkpoint's dtype),
// so the backend prepares merged weights at any precision. Layers the model lacks are errors naming them, or with `lenient`
// warnings appended to `warnings`; a layer of another shape is always an error. `unmerged`: the
// weights stay as they are and each layer adds weight·alpha/rank·up(down(x)) itself
// (TensorSource::lora_branches): no merged copy of any weight, two small products more per layer.
void apply_loras(ModelFiles& model, const std::vector<LoraSpec>& loras, bool lenient, std::vector<std::string>& warnings,
                 bool unmerged = false);

}  // namespace otter

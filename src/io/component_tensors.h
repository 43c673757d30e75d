#pragma once
// Every parameter tensor (diffusers name and shape) that an SD 1.x/2.x text encoder, UNet or
// VAE built from a given config owns. This is the contract between checkpoint files and models:
// loading checks each file against it (missing, unexpected and wrong-shaped tensors are
// reported before any model is built), the single-file key map is generated from it, and the
// parameter counts of `otter info` come from it.
//
// Supported: diffusers UNet2DConditionModel with CrossAttnDownBlock2D/DownBlock2D,
// UNetMidBlock2DCrossAttn, UpBlock2D/CrossAttnUpBlock2D; AutoencoderKL with
// DownEncoderBlock2D/UpDecoderBlock2D; HF CLIPTextModel. Anything else (SDXL's added
// embeddings, class embeddings, ...) is refused with an error naming the config key.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/shape.h"

namespace otter {

struct TensorSpec {
  std::string name;  // diffusers / transformers state-dict name, e.g. "down_blocks.0.resnets.0.conv1.weight"
  Shape shape;
};

std::vector<TensorSpec> unet_tensor_specs(const nlohmann::json& unet_config);
std::vector<TensorSpec> vae_tensor_specs(const nlohmann::json& vae_config);
// Names start with "text_model." as in model.safetensors. The position_ids buffer is not a
// parameter and not listed.
std::vector<TensorSpec> text_encoder_tensor_specs(const nlohmann::json& text_encoder_config);

int64_t count_parameters(const std::vector<TensorSpec>& specs);
int64_t count_unet_parameters(const nlohmann::json& unet_config);
int64_t count_vae_parameters(const nlohmann::json& vae_config);
int64_t count_text_encoder_parameters(const nlohmann::json& text_encoder_config);

}  // namespace otter

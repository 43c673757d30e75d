"""Architecture of the otter-shapes demo model, as the config.json files diffusers/transformers write
(every key spelled out, so loaders never depend on library defaults).

Version 2. Sizes were chosen to train in under two hours on 2 CPU cores. The VAE maps 128x128x3 to
16x16x4 (downscale 8, like SD; v1's 64x64 images gave 8x8 latents, where a 14-pixel shape was about
2x2 latent pixels and a round trip through the decoder kept only 66 % of shapes recognisable). The
UNet works on 16x16 latents at three resolutions (16, 8, 4) with attention only at 8 and 4:
attention over 256 positions costs more than the rest of the network, and the 3x3 grid of positions
the captions name reads at 8x8.
"""
from __future__ import annotations

TE_HIDDEN = 128  # v1: 64; the text encoder is 1 % of the compute, and two-object captions need binding


def text_encoder_config(vocab_size: int) -> dict:
    return {
        "_name_or_path": "otter-shapes-text-encoder",
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": vocab_size - 2,
        "dropout": 0.0,
        "eos_token_id": vocab_size - 1,
        "hidden_act": "quick_gelu",
        "hidden_size": TE_HIDDEN,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4 * TE_HIDDEN,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "pad_token_id": vocab_size - 1,
        "projection_dim": TE_HIDDEN,
        "torch_dtype": "float32",
        "transformers_version": "4.44.2",
        "vocab_size": vocab_size,
    }


def unet_config() -> dict:
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.30.3",
        "act_fn": "silu",
        "addition_embed_type": None,
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": None,
        "attention_head_dim": 4,  # SD 1.x's legacy name: this is the number of heads
        "attention_type": "default",
        "block_out_channels": [48, 96, 192],
        "center_input_sample": False,
        "class_embed_type": None,
        "class_embeddings_concat": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": TE_HIDDEN,
        "cross_attention_norm": None,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "dropout": 0.0,
        "dual_cross_attention": False,
        "encoder_hid_dim": None,
        "encoder_hid_dim_type": None,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 16,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": None,
        "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False,
        "resnet_time_scale_shift": "default",
        "reverse_transformer_layers_per_block": None,
        "sample_size": 16,
        "time_cond_proj_dim": None,
        "time_embedding_act_fn": None,
        "time_embedding_dim": None,
        "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": 1,
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "upcast_attention": False,
        "use_linear_projection": False,
    }


def vae_config(scaling_factor: float = 0.18215) -> dict:
    return {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.30.3",
        "act_fn": "silu",
        "block_out_channels": [16, 32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "force_upcast": True,
        "in_channels": 3,
        "latent_channels": 4,
        "latents_mean": None,
        "latents_std": None,
        "layers_per_block": 1,
        "mid_block_add_attention": True,
        "norm_num_groups": 8,
        "out_channels": 3,
        "sample_size": 128,
        "scaling_factor": scaling_factor,
        "shift_factor": None,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "use_post_quant_conv": True,
        "use_quant_conv": True,
    }


# Training noise schedule = SD's: scaled-linear betas 0.00085..0.012 over 1000 steps.
SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def scheduler_config() -> dict:
    """DDIM with SD 1.x's training schedule; leading spacing + steps_offset 1 as in SD 1.5."""
    return {
        "_class_name": "DDIMScheduler",
        "_diffusers_version": "0.30.3",
        **SCHEDULE,
        "clip_sample": False,
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "trained_betas": None,
    }


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.30.3",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

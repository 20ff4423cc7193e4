"""Architecture facts of Stable Diffusion: full-size U-Net configs, the CLIP text tower over the real
vocabulary, and SD's noise schedule. Built from these, models have random weights; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler
from transformers import CLIPTextConfig

from groundiff.sd.tokenizer import CLIP_MAX_LENGTH, load_clip_tokenizer

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
# SDXL has three levels; its finest has no attention.
SDXL_DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
SDXL_UP_BLOCKS = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
# SDXL's micro-conditioning: (original height, width, crop top, left, target height, width) per image.
SDXL_TIME_IDS = 6


def sd15_unet_config() -> dict[str, Any]:
    """Config of the full-size SD 1.5 U-Net (860 M parameters), the diffusers defaults."""
    return {
        "sample_size": 64,
        "cross_attention_dim": 768,
        "block_out_channels": (320, 640, 1280, 1280),
        "down_block_types": DOWN_BLOCKS,
        "up_block_types": UP_BLOCKS,
        "attention_head_dim": 8,
        "layers_per_block": 2,
    }


def sd2_unet_config() -> dict[str, Any]:
    """Config of the full-size SD 2.x U-Net (865 M parameters, 768² images, 96² latents)."""
    return {
        **sd15_unet_config(),
        "sample_size": 96,
        "cross_attention_dim": 1024,
        "attention_head_dim": (5, 10, 20, 20),
        "use_linear_projection": True,
    }


def sdxl_unet_config() -> dict[str, Any]:
    """Config of the full-size SDXL base U-Net (2.6 B parameters, 1024² images, 128² latents).

    Its cross-attention reads 2048-wide tokens (CLIP ViT-L/14's 768 and OpenCLIP ViT-bigG/14's 1280
    concatenated); `text_time` adds the pooled bigG embedding (1280) and six size/crop ids (6 × 256)
    to the time embedding: 2816 inputs.
    """
    return {
        "sample_size": 128,
        "cross_attention_dim": 2048,
        "block_out_channels": (320, 640, 1280),
        "down_block_types": SDXL_DOWN_BLOCKS,
        "up_block_types": SDXL_UP_BLOCKS,
        "attention_head_dim": (5, 10, 20),
        "transformer_layers_per_block": (1, 2, 10),
        "layers_per_block": 2,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 1280 + SDXL_TIME_IDS * 256,
    }


def pooled_text_width(unet_config: Any) -> int:
    """Width of the pooled text embedding a `text_time` (SDXL) U-Net adds to its time embedding."""
    return int(unet_config.projection_class_embeddings_input_dim - SDXL_TIME_IDS * unet_config.addition_time_embed_dim)


def clip_text_config(width: int, layers: int, heads: int = 4, ffn_factor: int = 4) -> CLIPTextConfig:
    """A CLIP text-tower config sized `width` × `layers` over the real vocabulary and its special tokens."""
    tokenizer = load_clip_tokenizer()
    return CLIPTextConfig(
        hidden_size=width,
        intermediate_size=ffn_factor * width,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=width,
    )


def sd_ddim_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """SD's noise schedule (scaled-linear betas 0.00085–0.012, 1000 steps) with DDIM sampling."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )

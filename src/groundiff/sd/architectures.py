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

"""Tiny random-weight Stable Diffusion pipelines built from config, offline, for tests and smoke runs.

In the style of diffusers' `get_dummy_components()`: every component is built in code from a
seed, so two calls give identical weights. The tokenizer is the real CLIP BPE vocabulary, so
tokenization in tests is the real thing. Two architectures mirror the two Stable Diffusion families:

- `sd1`: SD 1.x layout (conv projections in attention, one head size, epsilon prediction).
- `sd2`: SD 2.x layout (linear projections in attention, per-block head dims, a different text
  width, v-prediction scheduler).

`sd15_unet_config()` and `sd2_unet_config()` (from `groundiff.sd.architectures`) are the full-size U-Nets,
for shape and throughput checks with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from groundiff.sd.architectures import (
    DOWN_BLOCKS,
    UP_BLOCKS,
    clip_text_config,
    sd_ddim_scheduler,
)
from groundiff.sd.tokenizer import load_clip_tokenizer


@dataclass(frozen=True)
class TinyArchitecture:
    """Sizes of a tiny SD-style pipeline; the block layout is SD's (3 cross-attention levels + 1 plain).

    Attributes:
        text_width: CLIP text hidden size (SD 1.x: 768, SD 2.x: 1024 at full size).
        block_channels: U-Net channels per level.
        head_dim: attention head size, one int (SD 1.x) or one per block (SD 2.x).
        linear_projection: SD 2.x uses linear instead of 1×1-conv projections in attention.
        prediction_type: "epsilon" (SD 1.x, SD 2 base) or "v_prediction" (SD 2 at 768²).
        image_size: native image side in pixels; the VAE downsamples by 2.
    """

    text_width: int
    block_channels: tuple[int, int, int, int]
    head_dim: int | tuple[int, ...]
    linear_projection: bool
    prediction_type: str
    image_size: int = 32


TINY_ARCHITECTURES = {
    "sd1": TinyArchitecture(32, (8, 16, 32, 32), 4, False, "epsilon"),
    "sd2": TinyArchitecture(48, (8, 16, 32, 32), (2, 4, 8, 8), True, "v_prediction"),
}


def tiny_components(architecture: str = "sd1", seed: int = 0) -> dict[str, Any]:
    """Seeded random-weight components of a tiny SD pipeline, by architecture name (`sd1`, `sd2`)."""
    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"Unknown tiny architecture {architecture!r}; choose one of {sorted(TINY_ARCHITECTURES)}.")
    arch = TINY_ARCHITECTURES[architecture]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=arch.image_size // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=arch.block_channels,
        down_block_types=DOWN_BLOCKS,
        up_block_types=UP_BLOCKS,
        cross_attention_dim=arch.text_width,
        attention_head_dim=arch.head_dim,
        use_linear_projection=arch.linear_projection,
        norm_num_groups=4,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=arch.image_size,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(clip_text_config(arch.text_width, layers=2, ffn_factor=2))
    scheduler = sd_ddim_scheduler(arch.prediction_type)
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": load_clip_tokenizer(),
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def tiny_pipeline(architecture: str = "sd1", seed: int = 0) -> StableDiffusionPipeline:
    """A tiny random-weight `StableDiffusionPipeline` (32×32 images) with the real CLIP tokenizer."""
    pipe = StableDiffusionPipeline(**tiny_components(architecture, seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe

"""Tiny random-weight Stable Diffusion pipelines built from config, offline, for tests and smoke runs.

In the style of diffusers' `get_dummy_components()`: every component is built in code from a
seed, so two calls give identical weights. The tokenizer is the real CLIP BPE vocabulary, so
tokenization in tests is the real thing. Two architectures mirror the two Stable Diffusion families:

- `sd1`: SD 1.x layout (conv projections in attention, one head size, epsilon prediction).
- `sd2`: SD 2.x layout (linear projections in attention, per-block head dims, a different text
  width, v-prediction scheduler); `sd2-768` the same at SD 2's 768² images (96² latents, the VAE
  downsamples by 8 as the real one does).

`tiny_sdxl_pipeline()` mirrors SDXL: three levels (the finest without attention), two text towers
(the second with a projection, for the pooled embedding) whose states are concatenated for
cross-attention, and `text_time` micro-conditioning.

`sd15_unet_config()`, `sd2_unet_config()` and `sdxl_unet_config()` (from `groundiff.sd.architectures`)
are the full-size U-Nets, for shape and throughput checks with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from groundiff.sd.architectures import (
    DOWN_BLOCKS,
    SDXL_TIME_IDS,
    UP_BLOCKS,
    clip_text_config,
    sd_ddim_scheduler,
    sdxl_unet_config,
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
        image_size: native image side in pixels.
        vae_channels: VAE channels per level; the VAE downsamples by 2 per level after the first.
    """

    text_width: int
    block_channels: tuple[int, int, int, int]
    head_dim: int | tuple[int, ...]
    linear_projection: bool
    prediction_type: str
    image_size: int = 32
    vae_channels: tuple[int, ...] = (8, 16)


TINY_ARCHITECTURES = {
    "sd1": TinyArchitecture(32, (8, 16, 32, 32), 4, False, "epsilon"),
    "sd2": TinyArchitecture(48, (8, 16, 32, 32), (2, 4, 8, 8), True, "v_prediction"),
    "sd2-768": TinyArchitecture(48, (8, 16, 32, 32), (2, 4, 8, 8), True, "v_prediction", 768, (4, 4, 4, 4)),
}
# The two text towers of the tiny SDXL (CLIP ViT-L/14's 768 and OpenCLIP ViT-bigG/14's 1280 at full size).
TINY_SDXL_TEXT_WIDTHS = (32, 48)
TINY_SDXL_TIME_EMBED_DIM = 8  # per micro-conditioning id; 256 at full size


def tiny_components(architecture: str = "sd1", seed: int = 0) -> dict[str, Any]:
    """Seeded random-weight components of a tiny SD pipeline, by architecture name (`sd1`, `sd2`, `sd2-768`)."""
    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"Unknown tiny architecture {architecture!r}; choose one of {sorted(TINY_ARCHITECTURES)}.")
    arch = TINY_ARCHITECTURES[architecture]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=arch.image_size // 2 ** (len(arch.vae_channels) - 1),  # latent side
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
    vae = _tiny_vae(arch.vae_channels, arch.image_size, seed + 1)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(clip_text_config(arch.text_width, layers=2, ffn_factor=2))
    scheduler = sd_ddim_scheduler(arch.prediction_type)
    return {
        "unet": unet.eval(),
        "vae": vae,
        "text_encoder": text_encoder.eval(),
        "tokenizer": load_clip_tokenizer(),
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def _tiny_vae(channels: tuple[int, ...], image_size: int, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=image_size,
    )
    return vae.eval()


def tiny_pipeline(architecture: str = "sd1", seed: int = 0) -> StableDiffusionPipeline:
    """A tiny random-weight `StableDiffusionPipeline` (32×32 images; 768×768 for `sd2-768`) with the real
    CLIP tokenizer."""
    pipe = StableDiffusionPipeline(**tiny_components(architecture, seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_unet_config() -> dict[str, Any]:
    """Config of the tiny SDXL U-Net: SDXL's block layout and conditioning at tiny widths (16² latents)."""
    return {
        **sdxl_unet_config(),
        "sample_size": 16,
        "layers_per_block": 1,
        "block_out_channels": (8, 16, 32),
        "transformer_layers_per_block": (1, 1, 2),
        "attention_head_dim": (2, 4, 8),
        "cross_attention_dim": sum(TINY_SDXL_TEXT_WIDTHS),
        "addition_time_embed_dim": TINY_SDXL_TIME_EMBED_DIM,
        # the pooled embedding of the second tower (its projection is as wide as the tower) + the ids
        "projection_class_embeddings_input_dim": TINY_SDXL_TEXT_WIDTHS[1] + SDXL_TIME_IDS * TINY_SDXL_TIME_EMBED_DIM,
        "norm_num_groups": 4,
    }


def tiny_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Seeded random-weight components of a tiny `StableDiffusionXLPipeline` (32×32 images).

    Both tokenizers are the bundled CLIP tokenizer (SDXL's two share its vocabulary).
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_sdxl_unet_config())
    vae = _tiny_vae((8, 16), 32, seed + 1)
    first, second = TINY_SDXL_TEXT_WIDTHS
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(clip_text_config(first, layers=2, ffn_factor=2))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(second, layers=2, ffn_factor=2))
    return {
        "unet": unet.eval(),
        "vae": vae,
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": load_clip_tokenizer(),
        "tokenizer_2": load_clip_tokenizer(),
        "scheduler": sd_ddim_scheduler(),
        "image_encoder": None,
        "feature_extractor": None,
        "force_zeros_for_empty_prompt": True,
        "add_watermarker": False,
    }


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A tiny random-weight `StableDiffusionXLPipeline` (32×32 images) with the real CLIP tokenizer."""
    pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe

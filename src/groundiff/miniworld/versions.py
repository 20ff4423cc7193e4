"""The mini world's U-Net versions, as Stable Diffusion has several: what each is, and how it was trained.

`miniworld` is the U-Net the world was built with. `miniworld-ft` is a *fine-tune* of it, trained further on
renders of a changed style (striped, grainy backgrounds), as community fine-tunes of SD 1.5 are.
`miniworld-v2` is a *second version* trained from scratch with SD 2's differences: linear attention
projections, fewer and wider attention heads, v-prediction. `miniworld-crowd` is a fine-tune of the first
on scenes of 1 to 4 objects (every other version saw pairs only), for prompts that name more than two.
All of them keep the same VAE, text encoder and block widths, so a grounding model trained on one
version's features can be tested on another's (the paper's Tables 5-6). SD 2 also changed the text
encoder; here it stays, so class embeddings are shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UnetVersion:
    """One shipped mini U-Net.

    Attributes:
        model: the name `--model` takes.
        part: the training part of `scripts/train_miniworld.py` that trains it.
        folder: its diffusers U-Net folder under `miniworld/weights/`.
        architecture: `v1` (SD 1.x-like) or `v2` (SD 2.x-like attention).
        prediction_type: `epsilon` or `v_prediction`, as the scheduler must know.
        style: the renderer style of its training scenes (`groundiff.miniworld.renderer.STYLES`).
        start: the version whose shipped weights a fine-tune starts from; None when trained from scratch.
        scenes: how many renders (encoded once into latents) it trains on.
        objects: the objects per training scene; several counts share the scenes equally.
    """

    model: str
    part: str
    folder: str
    architecture: str
    prediction_type: str
    style: str
    start: str | None
    scenes: int
    objects: tuple[int, ...] = (2,)


VERSIONS = (
    UnetVersion("miniworld", "unet", "pipeline/unet", "v1", "epsilon", "plain", None, 40_000),
    UnetVersion("miniworld-ft", "unet-ft", "unet-ft", "v1", "epsilon", "textured", "miniworld", 16_000),
    UnetVersion("miniworld-v2", "unet-v2", "unet-v2", "v2", "v_prediction", "plain", None, 24_000),
    UnetVersion(
        "miniworld-crowd", "unet-crowd", "unet-crowd", "v1", "epsilon", "plain", "miniworld", 16_000, (1, 2, 3, 4)
    ),
)


def version_named(model: str) -> UnetVersion:
    for version in VERSIONS:
        if model in (version.model, version.part):
            return version
    names = ", ".join(v.model for v in VERSIONS)
    raise ValueError(f"Unknown mini-world model {model!r}; choose one of {names}.")


def unet_config(architecture: str, *, latent_size: int, text_width: int) -> dict[str, Any]:
    """UNet2DConditionModel keywords: cross-attention at the 8×8 and 4×4 levels, block widths (48, 96, 96).

    `v1` has 8 heads of 12 channels (diffusers reads `attention_head_dim` as the head count, as SD 1.x's
    configs do) and 1×1-conv projections; `v2` has 2 and 4 heads of 24 channels and linear projections.
    """
    common: dict[str, Any] = {
        "sample_size": latent_size,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": (48, 96, 96),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": text_width,
        "norm_num_groups": 16,
    }
    if architecture == "v1":
        return {**common, "attention_head_dim": 8}
    if architecture == "v2":
        return {**common, "attention_head_dim": (2, 4, 4), "use_linear_projection": True}
    raise ValueError(f"Unknown mini U-Net architecture {architecture!r}; choose v1 or v2.")

"""Feature shapes and storage sizes of a U-Net architecture, computed without weights or compute.

The U-Net is built on PyTorch's `meta` device from its config, so even the full-size SD 1.5
architecture gives its captured shapes in well under a second: storage sizes come from real shapes.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel

from groundiff.capture.config import CaptureConfig
from groundiff.capture.features import CapturedFeatures
from groundiff.capture.recorder import capture_features
from groundiff.capture.replay import unet_only_pipeline
from groundiff.sd.architectures import SDXL_TIME_IDS, pooled_text_width


def feature_shapes(
    unet_config: dict[str, Any], latent_size: int, capture: CaptureConfig | None = None, *, guidance: bool = True
) -> dict[str, tuple[int, ...]]:
    """Per-image shape (C, H, W) of every captured block for one U-Net step at `latent_size`².

    Args:
        unet_config: keyword arguments of `UNet2DConditionModel` (e.g. `architectures.sd15_unet_config()`).
        latent_size: latent side (image side / VAE factor; 64 for SD 1.5 at 512², 128 for SDXL at 1024²).
        capture: which blocks and which layout; steps are ignored (one step is run).
        guidance: whether the pipeline runs classifier-free guidance (needed by `uncond+cond`).
    """
    features = _capture_on_meta(unet_config, latent_size, capture, guidance)
    return {name: tuple(t.shape[1:]) for name, t in features.maps[0].items()}


def input_shapes(unet_config: dict[str, Any], latent_size: int, *, guidance: bool = True) -> dict[str, tuple[int, ...]]:
    """Per-image shape of every stored U-Net input (`feature_storage='unet-input'`) for one step:
    `sample` (4, h, w), `text` (77, D), for SDXL `text_embeds` (P,) and `time_ids` (6,), each
    condition twice with guidance (`{name}_uncond`)."""
    features = _capture_on_meta(unet_config, latent_size, None, guidance)
    return {name: tuple(t.shape[1:]) for name, t in features.inputs[0].items()}


def _capture_on_meta(
    unet_config: dict[str, Any], latent_size: int, capture: CaptureConfig | None, guidance: bool
) -> CapturedFeatures:
    """One U-Net step of a batch of one image, built and run on the meta device under `capture_features`."""
    capture = capture or CaptureConfig()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    batch = 2 if guidance else 1
    pipe = unet_only_pipeline(unet, 0, guidance)
    one_step = CaptureConfig(blocks=capture.blocks, steps=(0,), layout=capture.layout)
    latents = torch.empty(batch, unet.config.in_channels, latent_size, latent_size, device="meta")
    text = torch.empty(batch, 77, unet.config.cross_attention_dim, device="meta")
    added = None
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text and size/crop ids
        pooled = torch.empty(batch, pooled_text_width(unet.config), device="meta")
        added = {"text_embeds": pooled, "time_ids": torch.empty(batch, SDXL_TIME_IDS, device="meta")}
    with capture_features(pipe, one_step) as features:
        unet(latents, 0, encoder_hidden_states=text, added_cond_kwargs=added)
    return features


def bytes_per_image(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, num_steps: int = 1) -> int:
    """Uncompressed bytes of one image's maps (or inputs) of `shapes` for `num_steps` captured steps."""
    element = torch.empty((), dtype=dtype).element_size()
    return num_steps * element * sum(int(torch.Size(s).numel()) for s in shapes.values())

"""`generate_with_features`: one pipeline call that returns images together with their U-Net features."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from groundiff.capture.attention import capture_cross_attention
from groundiff.capture.config import CaptureConfig
from groundiff.capture.features import CapturedFeatures
from groundiff.capture.recorder import capture_features


@dataclass
class GenerationSettings:
    """Sampler settings of a generation call (the pipeline's own scheduler is used).

    Attributes:
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance weight; <= 1 disables guidance.
        height, width: image size in pixels; `None` uses the U-Net's native size.
        negative_prompt: optional negative prompt shared by all images.
    """

    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}.")


@dataclass
class GenerationOutput:
    """Images of one call and their features.

    Attributes:
        images: (B, H, W, 3) uint8 in [0, 255].
        features: U-Net maps, (B, C, h, w) per block and step, on the pipeline's device.
        prompts: the B prompts.
        seeds: the B per-image seeds.
        attention: with `attention=True`, (B, T, h, w) DAAM heat per prompt token at the latent size:
            the mean over (layer, head) of each map summed over steps (see `capture.attention`).
    """

    images: np.ndarray
    features: CapturedFeatures
    prompts: list[str]
    seeds: list[int]
    attention: torch.Tensor | None = None


def per_image_generators(seeds: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One generator per image so that image i depends on seeds[i] only, not on the batch it is in."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def generate_with_features(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    settings: GenerationSettings | None = None,
    capture: CaptureConfig | None = None,
    attention: bool = False,
) -> GenerationOutput:
    """Generate one image per prompt and capture its U-Net features.

    Args:
        pipe: a Stable-Diffusion-style diffusers pipeline.
        prompts: B prompts.
        seeds: B seeds; image i is the same whatever else is in the batch.
        settings: sampler settings (steps, guidance, size).
        capture: which blocks, steps and layout to keep.
        attention: also sum the cross-attention maps (costs one extra query/key product per layer).
    Returns:
        `GenerationOutput` with uint8 images and the captured features.
    """
    settings = settings or GenerationSettings()
    if len(prompts) != len(seeds):
        raise ValueError(f"Got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt.")
    generators = per_image_generators(seeds, "cpu")
    negative = [settings.negative_prompt] * len(prompts) if settings.negative_prompt else None
    recording = capture_cross_attention(pipe) if attention else nullcontext(None)
    with capture_features(pipe, capture) as features, recording as sums:
        result = pipe(
            list(prompts),
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            height=settings.height,
            width=settings.width,
            negative_prompt=negative,
            generator=generators,
            output_type="np",
            **settings.extra,
        )
    images = (np.clip(result.images, 0.0, 1.0) * 255).round().astype(np.uint8)  # (B, H, W, 3)
    heat = sums.heat(images.shape[1] // pipe.vae_scale_factor) if sums is not None else None  # latent side
    return GenerationOutput(images, features, list(prompts), [int(s) for s in seeds], attention=heat)

"""Features of images the pipeline did not draw: VAE encode, noise to a denoising step, one U-Net pass.

A generated sample's features are the U-Net's maps at a chosen step of its own denoising run. For
any other image (a render with exact masks, a photograph) the nearest equivalent is to encode it
with the pipeline's VAE, noise the latents to that step's timestep as the scheduler would, and run
the U-Net once with the prompt: the maps are then read exactly as during generation. Cross-attention
heat, when asked for, comes from that single pass (a generated sample sums it over all steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from groundiff.capture.attention import capture_cross_attention
from groundiff.capture.config import CaptureConfig, Layout
from groundiff.capture.features import CapturedFeatures
from groundiff.capture.generation import GenerationOutput, per_image_generators
from groundiff.capture.replay import replay_features, unet_only_pipeline


@torch.no_grad()
def encode_images(pipe: Any, images: np.ndarray) -> torch.Tensor:
    """(B, 4, h, w) scaled latents of (B, H, W, 3) uint8 images: the mean of the VAE posterior
    (deterministic, as the image is given) times the VAE's scaling factor, as the U-Net expects."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"Images must be (B, H, W, 3) uint8, got {images.shape} {images.dtype}.")
    parameter = next(pipe.vae.parameters())
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W) in [-1, 1]
    posterior = pipe.vae.encode(pixels.to(parameter.device, parameter.dtype)).latent_dist
    return posterior.mean * pipe.vae.config.scaling_factor


def noise_step_timestep(pipe: Any, num_inference_steps: int, step: int) -> int:
    """The scheduler timestep of denoising step `step` (negative counts from the end) in a run of
    `num_inference_steps` steps."""
    pipe.scheduler.set_timesteps(num_inference_steps)
    timesteps = pipe.scheduler.timesteps
    if not -len(timesteps) <= step < len(timesteps):
        raise ValueError(
            f"Noise step {step} does not exist in a run of {num_inference_steps} steps; "
            f"use an index in [{-len(timesteps)}, {len(timesteps) - 1}]."
        )
    return int(timesteps[step])


def prompt_conditions(
    pipe: Any, prompts: Sequence[str], guidance: bool, size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """The U-Net's conditions for `prompts` as the pipeline computes them, under `replay_features`' names.

    Returns:
        `text` (B, T, D) and, for SDXL, `text_embeds` (B, P) pooled text and `time_ids` (B, 6): SDXL's
        default micro-conditioning for a `size` = (H, W) image, uncropped, (H, W, 0, 0, H, W). With
        `guidance` also each one's `{name}_uncond` (an empty negative prompt).
    """
    device = next(pipe.unet.parameters()).device
    if getattr(pipe, "text_encoder_2", None) is None:
        text, text_uncond = pipe.encode_prompt(list(prompts), device, 1, guidance, negative_prompt=None)
        conditions = {"text": text, "text_uncond": text_uncond}
    else:
        text, text_uncond, pooled, pooled_uncond = pipe.encode_prompt(
            prompt=list(prompts), device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance
        )
        height, width = size
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=text.dtype, device=device)
        time_ids = time_ids.repeat(len(prompts), 1)  # (B, 6)
        conditions = {"text": text, "text_uncond": text_uncond, "text_embeds": pooled}
        conditions |= {"text_embeds_uncond": pooled_uncond, "time_ids": time_ids, "time_ids_uncond": time_ids}
    return {name: t for name, t in conditions.items() if guidance or not name.endswith("_uncond")}


@torch.no_grad()
def features_of_images(
    pipe: Any,
    images: np.ndarray,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    num_inference_steps: int,
    noise_step: int = -1,
    capture: CaptureConfig | None = None,
    attention: bool = False,
) -> GenerationOutput:
    """The U-Net features (and optionally cross-attention) of given images, as if generated from `prompts`.

    Args:
        pipe: a Stable-Diffusion-style pipeline (VAE, U-Net, text encoder, scheduler).
        images: (B, H, W, 3) uint8 images at the pipeline's resolution.
        prompts: B prompts; the U-Net pass is conditioned on them.
        seeds: B seeds of the added noise; image i depends only on seeds[i].
        num_inference_steps: the step count of the generation run whose step is imitated.
        noise_step: the denoising step whose timestep the latents are noised to (-1: the last).
        capture: blocks and layout; its single step names the maps (`step{S}`) as a generated set
            captured at that step would, so a model trained on generated sets reads them unchanged.
        attention: also record the pass's cross-attention (see `capture.attention`).
    Returns:
        `GenerationOutput` with the given images, the features at the captured step and, with
        `attention`, the (B, T, h, w) heat of that one pass.
    """
    capture = capture or CaptureConfig()
    if len(capture.steps) != 1:
        raise ValueError(f"One U-Net pass gives one step's maps; capture exactly one step, got {capture.steps}.")
    if not len(images) == len(prompts) == len(seeds):
        raise ValueError(f"Got {len(images)} images, {len(prompts)} prompts and {len(seeds)} seeds; pass one of each.")
    named_step = capture.resolve_steps(num_inference_steps)[0]
    timestep = noise_step_timestep(pipe, num_inference_steps, noise_step)
    latents = encode_images(pipe, images)  # (B, 4, h, w)
    generators = per_image_generators(seeds, "cpu")
    noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators]).to(latents)
    noisy = pipe.scheduler.add_noise(latents, noise, torch.tensor([timestep]))  # (B, 4, h, w)
    guidance = capture.layout is Layout.UNCOND_COND
    inputs = {"sample": noisy, **prompt_conditions(pipe, prompts, guidance, images.shape[1:3])}
    view = unet_only_pipeline(pipe.unet, timestep, guidance)
    recording = capture_cross_attention(view) if attention else nullcontext(None)
    with recording as sums:
        maps = replay_features(pipe.unet, inputs, timestep, capture)
    features = CapturedFeatures(
        maps={named_step: maps}, timesteps={named_step: timestep}, inputs={named_step: dict(inputs)}
    )
    heat = sums.heat(latents.shape[-1]) if sums is not None else None  # (B, T, h, w)
    return GenerationOutput(images, features, list(prompts), [int(s) for s in seeds], attention=heat)

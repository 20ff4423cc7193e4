"""Recomputing captured maps from stored U-Net inputs: one U-Net forward instead of megabytes on disk.

At the captured step the U-Net's inputs (latents, timestep, prompt embeddings) are ~0.3 MB for SD 1.5
at 512², its output maps 12.6 MB (fp16, conditional half). Storing the inputs and replaying the
forward at training time gives the same maps up to floating-point batch effects.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from groundiff.capture.config import CaptureConfig, Layout
from groundiff.capture.recorder import ADDED_CONDITIONS, capture_features


def unet_only_pipeline(unet: nn.Module, timestep: int, guidance: bool) -> Any:
    """The minimal pipeline view `capture_features` needs for a single direct U-Net call."""
    return SimpleNamespace(
        unet=unet, scheduler=SimpleNamespace(timesteps=[timestep]), do_classifier_free_guidance=guidance
    )


@torch.no_grad()
def replay_features(
    unet: nn.Module, inputs: dict[str, torch.Tensor], timestep: int, capture: CaptureConfig | None = None
) -> dict[str, torch.Tensor]:
    """The maps `capture` would have recorded, recomputed from one step's stored inputs.

    Args:
        unet: the same U-Net (weights, dtype) that generated the sample.
        inputs: `sample` (B, 4, h, w), `text` (B, T, D), for SDXL also `text_embeds` (B, P) and
            `time_ids` (B, 6), and, for the `uncond+cond` layout, each condition's `{name}_uncond`.
        timestep: the scheduler timestep of the step.
    Returns:
        block name → (B, C, H, W) (or (B, 2C, H, W) for `uncond+cond`).
    """
    capture = capture or CaptureConfig()
    guidance = capture.layout is Layout.UNCOND_COND
    names = ["text", *(name for name in ADDED_CONDITIONS if name in inputs)]
    missing = [f"{name}_uncond" for name in names if f"{name}_uncond" not in inputs]
    if guidance and missing:
        raise ValueError(
            f"Layout 'uncond+cond' needs the unconditional prompt embeddings ({', '.join(map(repr, missing))}) "
            "in the inputs."
        )
    parameter = next(unet.parameters())
    sample = inputs["sample"].to(parameter.device, parameter.dtype)
    conditions = {name: inputs[name].to(parameter.device, parameter.dtype) for name in names}
    if guidance:
        sample = torch.cat([sample, sample])  # (2B, 4, h, w), unconditional half first
        conditions = {name: torch.cat([inputs[f"{name}_uncond"].to(t), t]) for name, t in conditions.items()}
    text = conditions.pop("text")  # (B or 2B, T, D)
    one_step = CaptureConfig(blocks=capture.blocks, steps=(0,), layout=capture.layout)
    with capture_features(unet_only_pipeline(unet, timestep, guidance), one_step) as features:
        unet(sample, timestep, encoder_hidden_states=text, added_cond_kwargs=conditions or None)
    return features.maps[0]


def inputs_from_flat(flat: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    """Stored per-image tensors `step{S}.input.{name}` → step → name → (1, ...) batch of one."""
    inputs: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        step, kind, *name = key.split(".")
        if kind == "input":
            inputs.setdefault(int(step.removeprefix("step")), {})[name[0]] = tensor.unsqueeze(0)
    return inputs


def stored_maps(
    flat: dict[str, torch.Tensor],
    timesteps: dict[int, int],
    unet: nn.Module | None = None,
    capture: CaptureConfig | None = None,
) -> dict[str, torch.Tensor]:
    """A sample's maps under flat names `step{S}.{block}`: as stored, or recomputed from stored inputs.

    Args:
        flat: the sample's stored tensors (maps and/or `step{S}.input.*`).
        timesteps: step index → timestep (the sample's `feature_timesteps` metadata).
        unet: the generating U-Net, needed only when the sample stores inputs and no maps.
    """
    maps = {k: v for k, v in flat.items() if ".input." not in k}
    if maps:
        return maps
    if unet is None:
        raise ValueError(
            "This sample stores U-Net inputs instead of maps (feature_storage='unet-input'); pass the U-Net "
            "that generated it to recompute the maps."
        )
    recomputed = {}
    for step, inputs in inputs_from_flat(flat).items():
        for name, tensor in replay_features(unet, inputs, timesteps[step], capture).items():
            recomputed[f"step{step}.{name}"] = tensor[0]
    return recomputed

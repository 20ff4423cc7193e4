"""`capture_features`: record U-Net block outputs at chosen denoising steps of one pipeline call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from groundiff.capture.blocks import first_tensor, resolve_blocks
from groundiff.capture.config import CaptureConfig, Layout
from groundiff.capture.features import CapturedFeatures
from groundiff.capture.hooks import removable_hooks

# SDXL's U-Net also reads a pooled text embedding (B, P) and six size/crop ids (B, 6) through
# `added_cond_kwargs`; they are stored beside the text so that replay can pass them back.
ADDED_CONDITIONS = ("text_embeds", "time_ids")


class _StepRecorder:
    """Counts U-Net calls (one per denoising step) and keeps block outputs of the wanted steps."""

    def __init__(self, pipe: Any, config: CaptureConfig) -> None:
        self.pipe = pipe
        self.config = config
        self.blocks = resolve_blocks(pipe.unet, config.blocks)
        self.features = CapturedFeatures()
        self.call_index = -1
        self.wanted: tuple[int, ...] = ()
        self.num_steps = 0
        self.recording_step: int | None = None

    def before_unet(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.call_index += 1
        if self.call_index == 0:
            # The pipeline has set the scheduler's timesteps by its first U-Net call.
            self.num_steps = len(self.pipe.scheduler.timesteps)
            self.wanted = self.config.resolve_steps(self.num_steps)
        elif self.call_index >= self.num_steps:
            raise RuntimeError(
                "capture_features records one pipeline call; the U-Net ran more often than the "
                f"{self.num_steps} scheduled steps. Open a new `capture_features` context per call."
            )
        self.recording_step = self.call_index if self.call_index in self.wanted else None
        if self.recording_step is not None:
            timestep = kwargs.get("timestep", args[1] if len(args) > 1 else -1)
            self.features.timesteps[self.recording_step] = int(torch.as_tensor(timestep).flatten()[0])
            self.features.maps[self.recording_step] = {}
            self.features.inputs[self.recording_step] = self.unet_inputs(args, kwargs)

    def unet_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-image U-Net inputs of this step, from which `replay_features` recomputes every map."""
        sample = kwargs.get("sample", args[0]).detach()
        text = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        if text is None:
            raise ValueError("The U-Net was called without encoder_hidden_states; is this a text-to-image U-Net?")
        added = kwargs.get("added_cond_kwargs") or {}
        conditions = {"text": text, **{name: added[name] for name in ADDED_CONDITIONS if name in added}}
        if not getattr(self.pipe, "do_classifier_free_guidance", False):
            return {"sample": sample.clone(), **{name: t.detach().clone() for name, t in conditions.items()}}
        # Both halves of the guidance batch hold the same latents; the prompts differ.
        inputs = {"sample": sample.chunk(2)[1].clone()}
        for name, tensor in conditions.items():
            uncond, cond = tensor.detach().chunk(2)
            inputs[name], inputs[f"{name}_uncond"] = cond.clone(), uncond.clone()
        return inputs

    def hook_for(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def after_block(module: nn.Module, inputs: Any, output: Any) -> None:
            if self.recording_step is not None:
                self.features.maps[self.recording_step][name] = self.per_image(first_tensor(output).detach())

        return after_block

    def per_image(self, batch: torch.Tensor) -> torch.Tensor:
        """(2B, C, H, W) guidance batch, unconditional half first → (B, C, H, W) or (B, 2C, H, W)."""
        with_guidance = bool(getattr(self.pipe, "do_classifier_free_guidance", False))
        if not with_guidance:
            if self.config.layout is Layout.UNCOND_COND:
                raise ValueError(
                    "Layout 'uncond+cond' needs classifier-free guidance, but this call runs without it "
                    "(guidance_scale <= 1). Use layout 'cond' or a guidance_scale above 1."
                )
            return batch
        uncond, cond = batch.chunk(2)  # each (B, C, H, W)
        if self.config.layout is Layout.COND:
            return cond.clone()  # a copy frees the unconditional half's memory
        return torch.cat([uncond, cond], dim=1)  # (B, 2C, H, W)


@contextmanager
def capture_features(pipe: Any, config: CaptureConfig | None = None) -> Iterator[CapturedFeatures]:
    """Record U-Net features during one call of a Stable-Diffusion-style pipeline.

    Usage::

        with capture_features(pipe, CaptureConfig(steps=(-1,))) as features:
            images = pipe(prompt, num_inference_steps=50).images
        features.maps[49]["up3"]  # (B, C, H, W), on the pipeline's device and dtype

    Args:
        pipe: any diffusers pipeline with `.unet` (a `UNet2DConditionModel`) and `.scheduler`.
        config: blocks, steps and layout; defaults to every block at the last step, conditional half.
    Yields:
        The `CapturedFeatures` that fills in while the pipeline runs.
    Every hook is removed on exit, also when the pipeline raises.
    """
    recorder = _StepRecorder(pipe, config or CaptureConfig())
    with removable_hooks() as handles:
        handles.append(pipe.unet.register_forward_pre_hook(recorder.before_unet, with_kwargs=True))
        for name, module in recorder.blocks.items():
            handles.append(module.register_forward_hook(recorder.hook_for(name)))
        yield recorder.features

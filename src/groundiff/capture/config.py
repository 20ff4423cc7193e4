"""Which U-Net features to capture: blocks, denoising steps and batch layout."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from groundiff.config import option


class Layout(StrEnum):
    """How the classifier-free-guidance batch becomes one feature map per image.

    COND keeps the conditional half only: (B, C, H, W).
    UNCOND_COND stacks the unconditional and the conditional half of each image on channels,
    the layout of the reference implementation, correct here for any batch size: (B, 2C, H, W).
    """

    COND = "cond"
    UNCOND_COND = "uncond+cond"


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture during a pipeline call.

    Attributes:
        blocks: block names (`down0`…, `mid`, `up0`…) or dotted U-Net submodule paths;
            `None` means every down block, the mid block and every up block.
        steps: denoising step indices, 0-based in the order the pipeline runs them;
            negative indices count from the end (-1 is the last step, the reference's choice).
        layout: see `Layout`.
    """

    blocks: tuple[str, ...] | None = None
    steps: tuple[int, ...] = (-1,)
    layout: Layout = Layout.COND

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("CaptureConfig.steps is empty: name at least one denoising step, e.g. steps=(-1,).")
        if self.blocks is not None and not self.blocks:
            raise ValueError("CaptureConfig.blocks is empty: name at least one block, or pass None for all.")
        object.__setattr__(self, "layout", Layout(self.layout))

    def resolve_steps(self, num_steps: int) -> tuple[int, ...]:
        """Step indices as non-negative integers for a run of `num_steps` denoising steps."""
        resolved = []
        for step in self.steps:
            index = step + num_steps if step < 0 else step
            if not 0 <= index < num_steps:
                raise ValueError(
                    f"Capture step {step} does not exist in a run of {num_steps} denoising steps; "
                    f"use an index in [{-num_steps}, {num_steps - 1}]."
                )
            resolved.append(index)
        return tuple(sorted(set(resolved)))


@dataclass
class CaptureRunConfig:
    """One image generated from a prompt with its U-Net features captured (`groundiff capture`)."""

    prompt: str = option("a photograph of a dog and a sofa", "", positional=True)
    model: str = option("tiny-sd1", "built-in name, hub id, diffusers folder or .safetensors")
    steps: int = option(50, "denoising steps")
    guidance_scale: float = option(7.5, "")
    seed: int = option(0, "")
    blocks: tuple[str, ...] | None = option(None, "comma-separated blocks (down0,…,mid,up0,…); default all")
    capture_steps: tuple[int, ...] = option((-1,), "comma-separated step indices; -1 is the last")
    layout: Literal["cond", "uncond+cond"] = option("cond", "")
    dtype: Literal["float32", "float16", "bfloat16"] = option("float32", "")
    device: str | None = option(None, "cpu, cuda, …; default cuda when available")
    out: str | None = option(None, "folder for the image PNG and features safetensors")

    def capture(self) -> CaptureConfig:
        return CaptureConfig(blocks=self.blocks, steps=self.capture_steps, layout=Layout(self.layout))

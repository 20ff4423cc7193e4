"""Captured U-Net feature maps of one pipeline call, and their per-image views."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from groundiff.capture.blocks import group_by_resolution


@dataclass
class CapturedFeatures:
    """Feature maps of a batch of images, kept on the device they were computed on.

    Attributes:
        maps: step index → block name → tensor (B, C, H, W) in the U-Net's dtype
            (C doubles for the `uncond+cond` layout).
        timesteps: step index → scheduler timestep value of that step.
    """

    maps: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    timesteps: dict[int, int] = field(default_factory=dict)

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(sorted(self.maps))

    @property
    def num_images(self) -> int:
        first = next(iter(next(iter(self.maps.values())).values()))
        return int(first.shape[0])

    def for_image(self, index: int) -> dict[int, dict[str, torch.Tensor]]:
        """Maps of image `index`: step → block → (C, H, W) views, no copy."""
        return {step: {name: t[index] for name, t in blocks.items()} for step, blocks in self.maps.items()}

    def by_resolution(self, step: int | None = None) -> dict[int, list[torch.Tensor]]:
        """Maps of one step (default: the only or last captured step) grouped by side length, coarsest first."""
        step = self.steps[-1] if step is None else step
        return group_by_resolution(self.maps[step])

    def flat(self, index: int) -> dict[str, torch.Tensor]:
        """Maps of image `index` under flat names `step{S}.{block}`, ready for safetensors."""
        return {f"step{step}.{name}": t for step, blocks in self.for_image(index).items() for name, t in blocks.items()}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CapturedFeatures:
        """A copy on `device` and/or in `dtype`, e.g. `.to("cpu", torch.float16)` for storage."""
        maps = {s: {n: t.to(device=device, dtype=dtype) for n, t in b.items()} for s, b in self.maps.items()}
        return CapturedFeatures(maps=maps, timesteps=dict(self.timesteps))

    def cpu(self) -> CapturedFeatures:
        return self.to("cpu")

    def nbytes_per_image(self) -> int:
        """Bytes of one image's maps in their current dtype."""
        return sum(t[0].numel() * t.element_size() for blocks in self.maps.values() for t in blocks.values())

    def describe(self) -> list[str]:
        """One line per captured map: step, block, per-image shape and dtype."""
        return [
            f"step {step:>3}  {name:<8} {tuple(t.shape[1:])}  {str(t.dtype).removeprefix('torch.')}"
            for step, blocks in sorted(self.maps.items())
            for name, t in blocks.items()
        ]

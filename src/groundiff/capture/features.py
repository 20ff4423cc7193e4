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
        inputs: step index → the U-Net's inputs at that step, per image: `sample` (B, 4, h, w) latents,
            `text` (B, T, D) prompt embeddings, for SDXL `text_embeds` (B, P) and `time_ids` (B, 6),
            and, with guidance, each condition's `{name}_uncond` (`text_uncond`, …); from these
            `replay_features` recomputes the maps, so storing them replaces storing the maps.
    """

    maps: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    timesteps: dict[int, int] = field(default_factory=dict)
    inputs: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

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

    def flat(self, index: int, *, maps: bool = True, inputs: bool = False) -> dict[str, torch.Tensor]:
        """Image `index` under flat names, ready for safetensors: maps as `step{S}.{block}`, U-Net
        inputs as `step{S}.input.{name}` (see `replay.maps_from_flat` for the way back)."""
        flat = {}
        if maps:
            flat.update({f"step{s}.{name}": t[index] for s, blocks in self.maps.items() for name, t in blocks.items()})
        if inputs:
            flat.update(
                {f"step{s}.input.{n}": t[index] for s, values in self.inputs.items() for n, t in values.items()}
            )
        return flat

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CapturedFeatures:
        """A copy on `device` and/or in `dtype` (maps only; inputs keep their dtype), e.g. for storage."""
        maps = {s: {n: t.to(device=device, dtype=dtype) for n, t in b.items()} for s, b in self.maps.items()}
        inputs = {s: {n: t.to(device=device) for n, t in b.items()} for s, b in self.inputs.items()}
        return CapturedFeatures(maps=maps, timesteps=dict(self.timesteps), inputs=inputs)

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

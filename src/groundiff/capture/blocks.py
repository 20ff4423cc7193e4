"""Names of the U-Net blocks whose outputs can be captured, and grouping of maps by resolution.

Short names follow the diffusers `UNet2DConditionModel` layout: `down0` … `down{n-1}` are the
entries of `unet.down_blocks`, `mid` is `unet.mid_block`, `up0` … `up{n-1}` are `unet.up_blocks`.
Any dotted submodule path of the U-Net (`down_blocks.1.attentions.0`) is accepted as well.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn


def default_block_names(unet: nn.Module) -> tuple[str, ...]:
    """All top-level blocks of `unet` in forward order: every down block, the mid block, every up block."""
    down = [f"down{i}" for i in range(len(unet.down_blocks))]  # type: ignore[arg-type]
    up = [f"up{i}" for i in range(len(unet.up_blocks))]  # type: ignore[arg-type]
    mid = ["mid"] if getattr(unet, "mid_block", None) is not None else []
    return (*down, *mid, *up)


def module_path(name: str) -> str:
    """Dotted module path inside the U-Net for a short block name (`down1` → `down_blocks.1`)."""
    if name == "mid":
        return "mid_block"
    for prefix, attribute in (("down", "down_blocks"), ("up", "up_blocks")):
        index = name[len(prefix) :]
        if name.startswith(prefix) and index.isdigit():
            return f"{attribute}.{index}"
    return name


def resolve_blocks(unet: nn.Module, names: tuple[str, ...] | None) -> dict[str, nn.Module]:
    """Map each requested block name to its module; `None` selects `default_block_names(unet)`.

    Raises:
        ValueError: a name that is no block or submodule of this U-Net, with the closest valid names.
    """
    names = default_block_names(unet) if names is None else names
    modules = dict(unet.named_modules())
    resolved: dict[str, nn.Module] = {}
    for name in names:
        path = module_path(name)
        if path not in modules or path == "":
            valid = list(default_block_names(unet))
            close = difflib.get_close_matches(name, valid + list(modules), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"Feature block {name!r} is not part of this U-Net.{hint} "
                f"Valid block names: {', '.join(valid)}, or any dotted submodule path of the U-Net."
            )
        resolved[name] = modules[path]
    return resolved


def first_tensor(output: object) -> torch.Tensor:
    """The hidden states a block returns: down blocks return `(hidden_states, residuals)`."""
    while not isinstance(output, torch.Tensor):
        if isinstance(output, (tuple, list)) and output:
            output = output[0]
        else:
            raise TypeError(f"Cannot find a feature tensor in a block output of type {type(output).__name__}")
    return output


def group_by_resolution(maps: dict[str, torch.Tensor]) -> dict[int, list[torch.Tensor]]:
    """Group feature maps by spatial size, coarsest first, keeping block order within a level.

    Args:
        maps: block name → tensor (..., C, H, W), square maps.
    Returns:
        H → list of tensors of that size (for SD 1.5 at 512²: 8, 16, 32, 64).
    """
    levels: dict[int, list[torch.Tensor]] = {}
    for tensor in maps.values():
        levels.setdefault(tensor.shape[-1], []).append(tensor)
    return dict(sorted(levels.items()))

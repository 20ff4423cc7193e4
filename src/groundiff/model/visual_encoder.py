"""Visual encoder: U-Net maps of every resolution level → mask features and visual tokens.

Legend for shape comments: B batch, C channels, S side of a square map, T tokens, p patch side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as with_spectral_norm


def level_sizes(native_sizes: Sequence[int]) -> list[int]:
    """Side at which each level is fused: twice its native side, at most the finest native side.

    For SD 1.5 at 512² the levels 8, 16, 32, 64 are fused at 16, 32, 64, 64 (the reference layout).
    """
    finest = max(native_sizes)
    return [min(2 * size, finest) for size in native_sizes]


def resize(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (B, C, S, S) maps to (B, C, size, size); unchanged when already that size."""
    if maps.shape[-1] == size:
        return maps
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


class VisualEncoder(nn.Module):
    """Reduces each resolution level with a 1×1 conv, fuses the levels coarse → fine with residual
    conv blocks, and cuts the finest fused map into patch tokens.

    Each level is reduced at its native side and then bilinearly upsampled to its fusion side: a
    bias-free 1×1 conv and bilinear resizing commute, so this equals the reference's resize-then-reduce
    at a fraction of the cost. The residual blocks (norm → ReLU → 3×3 conv, twice, identity shortcut)
    use GroupNorm where the reference used BatchNorm: training runs at batch size 1 by default, where
    batch statistics are those of a single image and the running averages used at evaluation differ
    from them; GroupNorm behaves the same in training and evaluation and for every batch size.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        native_sizes: Sequence[int],
        level_channels: Sequence[int],
        patch_size: int,
        width: int,
        spectral_norm: bool = True,
        norm_groups: int = 8,
    ) -> None:
        """
        Args:
            in_channels: concatenated input channels of each level, coarse to fine.
            native_sizes: side of each level's maps, coarse to fine (strictly increasing).
            level_channels: 1×1-conv output channels of each level, coarse to fine.
            patch_size: side of the square patches cut into tokens; must divide the finest side.
            width: token width after the linear projection.
            spectral_norm: spectral normalisation on the 3×3 convs (as the reference).
            norm_groups: GroupNorm groups, reduced to the gcd with each block's channels.
        """
        super().__init__()
        assert len(in_channels) == len(native_sizes) == len(level_channels)
        assert max(native_sizes) % patch_size == 0
        self.native_sizes = list(native_sizes)
        self.fusion_sizes = level_sizes(native_sizes)
        self.patch_size = patch_size
        self.reduce = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)
            for c_in, c_out in zip(in_channels, level_channels, strict=True)
        )
        fused_channels = [sum(level_channels[: i + 1]) for i in range(1, len(level_channels))]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(math.gcd(norm_groups, c), c),
                nn.ReLU(),
                self._conv3x3(c, spectral_norm),
                nn.GroupNorm(math.gcd(norm_groups, c), c),
                nn.ReLU(),
                self._conv3x3(c, spectral_norm),
            )
            for c in fused_channels
        )
        self.out_channels = sum(level_channels)
        self.to_tokens = nn.Linear(self.out_channels * patch_size**2, width, bias=False)

    @staticmethod
    def _conv3x3(channels: int, spectral_norm: bool) -> nn.Module:
        conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        return with_spectral_norm(conv) if spectral_norm else conv

    def forward(self, levels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            levels: per level, coarse to fine, the concatenated maps (B, C_l, S_l, S_l), float.
        Returns:
            mask_features: (B, C, S, S) at the finest native side S, C = sum(level_channels).
            tokens: (B, T, width), T = (S / patch_size)², patches in row-major order.
        """
        reduced = [
            resize(conv(x), size) for conv, x, size in zip(self.reduce, levels, self.fusion_sizes, strict=True)
        ]  # each (B, c_l, s_l, s_l) with s_l the level's fusion side
        fused = reduced[0]
        for block, level in zip(self.blocks, reduced[1:], strict=True):
            fused = torch.cat([resize(fused, level.shape[-1]), level], dim=1)  # (B, c_0 + … + c_l, s_l, s_l)
            fused = fused + block(fused)
        patches = F.unfold(fused, kernel_size=self.patch_size, stride=self.patch_size)  # (B, C·p·p, T)
        tokens = self.to_tokens(patches.transpose(1, 2))  # (B, T, C·p·p) → (B, T, width)
        return fused, tokens

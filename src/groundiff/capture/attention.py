"""Cross-attention heat maps per prompt token, aggregated as DAAM does: the training-free reference.

Follows castorini/daam (Tang et al., 2023, "What the DAAM"), step by step:

1. Record. Each cross-attention layer keeps its own processor for its output, so images are
   unchanged; a wrapper also computes the layer's attention probabilities of the conditional half
   and sums them over denoising steps, per (layer, head), at the layer's own side s.
2. Aggregate (`CrossAttentionSums.heat`). Every (layer, head) map (T, s, s) is upsampled bicubically
   to the latent side, clamped at 0 (bicubic undershoots below 0), and the mean over all (layer,
   head) maps is taken: (B, T, latent, latent).
3. Per word (`class_heat_maps`). A class's map is the mean over its BPE tokens; stored min-max
   normalised to [0, 1].
4. Per mask (`groundiff.evaluation.references.expand_heat`, `threshold_masks`). Bicubic upsampling to the image
   size, min-max normalisation per map, then a threshold (DAAM's paper used 0.4).

Legend for shape comments: B batch, T prompt tokens, N classes, s attention side.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from groundiff.text import class_token_positions

# DAAM leaves out the maps whose side is 1/8 of the latent side (SD's 8×8 maps at latent 64), as
# too coarse to localise anything; the rule is applied literally, by factor, whatever the U-Net
# (the mini world's 8×8 and 4×4 maps at latent 16 have factors 2 and 4: none is skipped).
SKIPPED_FACTOR = 8
MIN_MAX_EPS = 1e-8  # DAAM's guard against constant maps in (x − min) / (max − min + eps)


def min_max_normalise(maps: torch.Tensor) -> torch.Tensor:
    """(M, *) float32 maps rescaled per map to [0, 1]: (x − min) / (max − min + 1e-8), as DAAM does.

    A constant map becomes all 0.
    """
    flat = maps.float().flatten(1)  # (M, pixels)
    low, high = flat.amin(dim=1), flat.amax(dim=1)  # (M,) each
    shape = (-1,) + (1,) * (maps.dim() - 1)
    return (maps.float() - low.view(shape)) / (high - low + MIN_MAX_EPS).view(shape)


class CrossAttentionSums:
    """Cross-attention probabilities summed over denoising steps, kept per (layer, head).

    Attributes:
        pipe: the pipeline whose calls are recorded (read for `do_classifier_free_guidance` and the
            U-Net's `sample_size`).
        sums: layer name → (B, heads, T, s, s) float32, the sum over steps of the conditional half's
            attention probabilities (each in [0, 1], summing to 1 over T).
    """

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, layer: str, probabilities: torch.Tensor, heads: int) -> None:
        """Add one call of one layer.

        Args:
            layer: the layer's name (its attention processor's key in the U-Net).
            probabilities: (2B·heads with guidance, else B·heads, s·s, T) attention probabilities,
                batch-major (image 0's heads first), unconditional half first with guidance.
            heads: the layer's number of heads.
        Raises:
            ValueError: the attention is not over a square map (non-square images are not supported).
        """
        batch_heads, pixels, tokens = probabilities.shape
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(
                f"Cross-attention layer {layer!r} attends over {pixels} positions, not a square map; "
                "cross-attention heat maps need square images (height == width)."
            )
        per_image = probabilities.reshape(batch_heads // heads, heads, pixels, tokens)  # (B', heads, s·s, T)
        if getattr(self.pipe, "do_classifier_free_guidance", False):
            per_image = per_image.chunk(2)[1]  # conditional half, (B, heads, s·s, T)
        per_token = per_image.transpose(2, 3).float()  # (B, heads, T, s·s)
        grid = per_token.reshape(*per_token.shape[:3], side, side)  # (B, heads, T, s, s)
        self.sums[layer] = self.sums[layer] + grid if layer in self.sums else grid

    def heat(self, latent_side: int | None = None) -> torch.Tensor:
        """(B, T, latent_side, latent_side) float32 ≥ 0: DAAM's mean over (layer, head) of the step sums.

        Each (layer, head) map is upsampled bicubically to the latent side and clamped at 0, except
        the maps of factor latent_side / s == 8, which DAAM skips (see `SKIPPED_FACTOR`).

        Args:
            latent_side: side of the latent; `None` takes the U-Net's `sample_size` (its native size).
        Raises:
            RuntimeError: nothing was recorded, or every map was skipped.
        """
        side = int(self.pipe.unet.config.sample_size) if latent_side is None else latent_side
        total: torch.Tensor | None = None
        count = 0
        for grid in self.sums.values():  # (B, heads, T, s, s)
            batch, heads, tokens, s, _ = grid.shape
            if math.isqrt(side * side // (s * s)) == SKIPPED_FACTOR:  # DAAM's factor, sqrt(latent_hw // hw)
                continue
            flat = grid.reshape(batch * heads, tokens, s, s)  # (B·heads, T, s, s)
            upsampled = F.interpolate(flat, size=(side, side), mode="bicubic", align_corners=False).clamp(min=0)
            summed = upsampled.reshape(batch, heads, tokens, side, side).sum(dim=1)  # (B, T, side, side)
            total = summed if total is None else total + summed
            count += heads
        if total is None:
            raise RuntimeError(
                "No cross-attention map to aggregate: run the pipeline inside `capture_cross_attention(pipe)` "
                f"(recorded layers: {len(self.sums)}; maps of side latent/{SKIPPED_FACTOR} are skipped)."
            )
        return total / count


class _RecordingProcessor:
    def __init__(self, inner: Any, sums: CrossAttentionSums, layer: str) -> None:
        self.inner, self.sums, self.layer = inner, sums, layer

    def __call__(
        self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        output = self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        if encoder_hidden_states is not None and hidden_states.dim() == 3:
            with torch.no_grad():
                query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B·heads, HW, d)
                key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))  # (B·heads, T, d)
                self.sums.add(self.layer, attn.get_attention_scores(query, key), attn.heads)
        return output


@contextmanager
def capture_cross_attention(pipe: Any) -> Iterator[CrossAttentionSums]:
    """Sum the cross-attention maps of every layer, head and step during one pipeline call.

    Usage: `with capture_cross_attention(pipe) as sums: pipe(...)`, then `sums.heat()`. The U-Net's
    attention processors are restored on exit, also when the call raises.
    """
    original = pipe.unet.attn_processors
    sums = CrossAttentionSums(pipe)
    try:
        pipe.unet.set_attn_processor({name: _RecordingProcessor(p, sums, name) for name, p in original.items()})
        yield sums
    finally:
        pipe.unet.set_attn_processor(original)


def class_heat_maps(heat: torch.Tensor, tokenizer: Any, prompt: str, class_names: list[str]) -> torch.Tensor:
    """(N, h, w) float32 in [0, 1]: each class's map, min-max normalised per class.

    A class's map is the mean over its BPE tokens in `prompt` of one image's (T, h, w) heat
    (`CrossAttentionSums.heat`), as DAAM's word heat map. Normalising here, at latent resolution,
    gives the same masks as DAAM's normalising after upsampling: bicubic weights sum to 1, so the
    upsampling commutes with the affine min-max map, and `expand_heat`'s min-max after upsampling
    cancels this one (exact up to the 1e-8 guard and a float16 store).
    """
    positions = class_token_positions(tokenizer, prompt, class_names)
    maps = torch.stack([heat[p].float().mean(dim=0) for p in positions])  # (N, h, w)
    return min_max_normalise(maps)

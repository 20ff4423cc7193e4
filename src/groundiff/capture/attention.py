"""Cross-attention heat maps per prompt token (DAAM-style), the training-free grounding reference.

Each cross-attention layer keeps its own processor for its output, so images are unchanged; a
wrapper also computes the layer's attention probabilities of the conditional half, averaged over
heads, and sums them over layers and denoising steps at each resolution. Per class, the heat map is
the mean over its tokens, upsampled to one size, normalised to [0, 1] and thresholded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from groundiff.text import class_token_positions


class CrossAttentionSums:
    """Summed cross-attention probabilities: side → (B, T, side, side), over every layer and step."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.sums: dict[int, torch.Tensor] = {}

    def add(self, probabilities: torch.Tensor, heads: int) -> None:
        """probabilities: (2B·heads or B·heads, HW, T) of one layer call."""
        batch_heads, pixels, tokens = probabilities.shape
        per_image = probabilities.reshape(batch_heads // heads, heads, pixels, tokens).mean(dim=1)  # (B', HW, T)
        if getattr(self.pipe, "do_classifier_free_guidance", False):
            per_image = per_image.chunk(2)[1]  # conditional half, (B, HW, T)
        side = int(pixels**0.5)
        grid = per_image.transpose(1, 2).reshape(per_image.shape[0], tokens, side, side).float()  # (B, T, s, s)
        self.sums[side] = self.sums[side] + grid if side in self.sums else grid

    def heat(self, size: int) -> torch.Tensor:
        """(B, T, size, size): every resolution's sum upsampled to `size` and added."""
        maps = [F.interpolate(s, size=(size, size), mode="bilinear", align_corners=False) for s in self.sums.values()]
        return torch.stack(maps).sum(dim=0)


class _RecordingProcessor:
    def __init__(self, inner: Any, sums: CrossAttentionSums) -> None:
        self.inner, self.sums = inner, sums

    def __call__(
        self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        output = self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        if encoder_hidden_states is not None and hidden_states.dim() == 3:
            with torch.no_grad():
                query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B·heads, HW, d)
                key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))  # (B·heads, T, d)
                self.sums.add(attn.get_attention_scores(query, key), attn.heads)
        return output


@contextmanager
def capture_cross_attention(pipe: Any) -> Iterator[CrossAttentionSums]:
    """Sum the cross-attention maps of every layer and step during one pipeline call.

    The U-Net's attention processors are restored on exit, also when the call raises.
    """
    original = pipe.unet.attn_processors
    sums = CrossAttentionSums(pipe)
    try:
        pipe.unet.set_attn_processor({name: _RecordingProcessor(p, sums) for name, p in original.items()})
        yield sums
    finally:
        pipe.unet.set_attn_processor(original)


def class_heat_maps(heat: torch.Tensor, tokenizer: Any, prompt: str, class_names: list[str]) -> torch.Tensor:
    """(N, H, W) heat of each class in [0, 1]: the mean over its tokens of one image's (T, H, W) maps."""
    positions = class_token_positions(tokenizer, prompt, class_names)
    maps = torch.stack([heat[p].mean(dim=0) for p in positions])  # (N, H, W)
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
    return maps / peak[:, None, None]

"""Stable Diffusion XL's two text towers seen as one encoder, as its U-Net's cross-attention sees them.

SDXL encodes a prompt with CLIP ViT-L/14 (768 wide) and OpenCLIP ViT-bigG/14 (1280 wide) and
concatenates, per token, the penultimate hidden state of each (`encode_prompt` with no clip skip):
every cross-attention layer reads (T, 2048) tokens. `SDXLTextEncoder` returns exactly these, behind
the interface of one CLIP text model, so that class embeddings (`groundiff.text`) are the mean of a
class's 2048-wide token states and the grounding model's text width follows.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn


class SDXLTextEncoder(nn.Module):
    """The two text encoders of an SDXL pipeline behind the interface of one CLIP text encoder.

    Called on (P, T) token ids of the first tokenizer it returns `(hidden,)`, hidden (P, T, D1 + D2):
    the penultimate hidden states of `text_encoder` (D1) and `text_encoder_2` (D2) concatenated on
    channels. `config.hidden_size` is D1 + D2 (2048 for SDXL).

    Both towers read the first tokenizer's ids. SDXL's two tokenizers share one BPE vocabulary and
    differ only in the padding token, and a causal text tower's states up to the end-of-text token
    do not depend on the padding after it, so every class token's state is the one SDXL computes.
    """

    def __init__(self, text_encoder: Any, text_encoder_2: Any) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        widths = [int(encoder.config.hidden_size) for encoder in (text_encoder, text_encoder_2)]
        self.config = SimpleNamespace(hidden_size=sum(widths))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor]:
        """(P, T) int64 token ids → `((P, T, D1 + D2),)` in the encoders' dtype."""
        states = [
            encoder(input_ids, output_hidden_states=True).hidden_states[-2]  # (P, T, D_i), penultimate layer
            for encoder in (self.text_encoder, self.text_encoder_2)
        ]
        return (torch.cat(states, dim=-1),)  # (P, T, D1 + D2)


def text_components(pipe: Any) -> tuple[Any, Any]:
    """The text encoder whose per-token states a pipeline's U-Net cross-attends to, and its tokenizer.

    SD 1.x and 2.x: the pipeline's CLIP text model (last hidden state). SDXL (a pipeline with a
    `text_encoder_2`): both towers as one `SDXLTextEncoder`, 2048 wide at full size.
    """
    if getattr(pipe, "text_encoder_2", None) is not None:
        return SDXLTextEncoder(pipe.text_encoder, pipe.text_encoder_2).eval(), pipe.tokenizer
    return pipe.text_encoder, pipe.tokenizer

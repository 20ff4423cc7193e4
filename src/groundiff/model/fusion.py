"""Fusion decoder: class embeddings attend to one image's visual tokens → one mask embedding per class.

Legend for shape comments: B batch, N classes, D text width, T tokens, W model width, C mask channels.
"""

from __future__ import annotations

import torch
from torch import nn


class FusionDecoder(nn.Module):
    """Pre-norm transformer decoder (queries = projected class embeddings, keys/values = visual tokens,
    no positional encoding) followed by an MLP that gives one mask embedding per class.

    Attention is batched: each image's queries attend only to that image's tokens (the reference
    flattened the batch, so with batch > 1 queries attended to every image's tokens). Padded queries
    are masked as keys of the self-attention, so they never change the real queries' outputs.
    The layers are `nn.TransformerDecoderLayer(norm_first=True)`, DETR's pre-norm layer; unlike the
    reference its attention projections have biases (+12 k parameters at the reference sizes).
    """

    def __init__(
        self,
        *,
        text_width: int,
        width: int,
        heads: int,
        layers: int,
        ffn_width: int,
        dropout: float,
        mlp_layers: int,
        out_channels: int,
    ) -> None:
        """
        Args:
            text_width: width D of the class embeddings (768 for CLIP ViT-L/14).
            width: model width W of queries and tokens.
            heads: attention heads (divide `width`).
            layers: decoder layers.
            ffn_width: hidden width of each feed-forward block.
            dropout: dropout on attention weights, residual branches and feed-forward hidden units.
            mlp_layers: linear layers of the output MLP (ReLU between them).
            out_channels: width C of the mask embeddings = channels of the mask features.
        """
        super().__init__()
        self.to_queries = nn.Linear(text_width, width, bias=False)
        layer = nn.TransformerDecoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=ffn_width,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=layers, norm=nn.LayerNorm(width))
        widths = [width] * mlp_layers + [out_channels]
        mlp: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            mlp.append(nn.Linear(w_in, w_out))
            if i < mlp_layers - 1:
                mlp.append(nn.ReLU())
        self.mlp = nn.Sequential(*mlp)

    def forward(
        self, class_embeddings: torch.Tensor, tokens: torch.Tensor, class_padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            class_embeddings: (B, N, D) float.
            tokens: (B, T, W) float, the visual tokens of each image.
            class_padding: (B, N) bool, True where a class slot is padding; None = no padding.
        Returns:
            (B, N, C) mask embeddings; rows of padded slots are unspecified.
        """
        queries = self.to_queries(class_embeddings)  # (B, N, W)
        if class_padding is not None:
            # An image whose slots are all padding would softmax over nothing (NaN): leave it unmasked.
            class_padding = class_padding & ~class_padding.all(dim=1, keepdim=True)  # (B, N)
        decoded = self.decoder(queries, tokens, tgt_key_padding_mask=class_padding)  # (B, N, W)
        return self.mlp(decoded)  # (B, N, C)

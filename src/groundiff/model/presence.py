"""Presence head: whether each queried object is in the image at all, so that an absent object is
answered "not found" instead of with a mask (a model trained only on present objects paints one anyway).

Legend for shape comments: B batch, N classes, C mask channels, S mask side.
"""

from __future__ import annotations

import torch
from torch import nn


class PresenceHead(nn.Module):
    """One presence logit per query, from its mask embedding and its mask logits' peak, mean and area.

    Its inputs are detached: the head reads what the decoder found and never reshapes it. Trained
    through the shared decoder, the presence loss (most queries are present, so it stays larger than
    the mask loss for long) took the decoder over and cost the masks about ten points of mIoU; the
    negative queries' empty-mask targets already teach the masks to stay empty for absent objects.
    """

    def __init__(self, channels: int, hidden: int = 64) -> None:
        """
        Args:
            channels: width C of the mask embeddings.
            hidden: width of the head's hidden layer.
        """
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels + 3, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, mask_embeddings: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask_embeddings: (B, N, C) float.
            logits: (B, N, S, S) mask logits of the same queries.
        Returns:
            (B, N) presence logits; the object is present where `sigmoid(logit) > 0.5`.
        """
        flat = logits.detach().flatten(2)  # (B, N, S·S)
        area = (flat > 0).float().mean(dim=2)  # share of pixels in the mask
        statistics = torch.stack([flat.amax(dim=2), flat.mean(dim=2), area], dim=2)  # (B, N, 3)
        inputs = torch.cat([mask_embeddings.detach(), statistics.to(mask_embeddings.dtype)], dim=2)  # (B, N, C+3)
        return self.mlp(inputs).squeeze(2)

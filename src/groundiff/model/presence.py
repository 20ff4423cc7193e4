"""Presence head: whether each queried object is in the image at all, so that an absent object is
answered "not found" instead of with a mask (a model trained only on present objects paints one anyway).

Legend for shape comments: B batch, N classes, C mask channels, S mask side.
"""

from __future__ import annotations

import torch
from torch import nn


class PresenceHead(nn.Module):
    """One presence logit per query from its mask embedding and the peak and mean of its mask logits.

    The logit statistics give the head the evidence the mask itself holds (read, not trained); the
    embedding, which attended to every visual token, adds what the map does not show.
    """

    def __init__(self, channels: int) -> None:
        """
        Args:
            channels: width C of the mask embeddings.
        """
        super().__init__()
        self.linear = nn.Linear(channels + 2, 1)

    def forward(self, mask_embeddings: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask_embeddings: (B, N, C) float.
            logits: (B, N, S, S) mask logits of the same queries.
        Returns:
            (B, N) presence logits; the object is present where `sigmoid(logit) > 0.5`.
        """
        # Detached: the head reads the masks but must not reshape them (a gradient through the mean
        # logit would spread every present object's mask, since most queries are present).
        flat = logits.detach().flatten(2)  # (B, N, S·S)
        statistics = torch.stack([flat.amax(dim=2), flat.mean(dim=2)], dim=2)  # (B, N, 2)
        return self.linear(torch.cat([mask_embeddings, statistics.to(mask_embeddings.dtype)], dim=2)).squeeze(2)

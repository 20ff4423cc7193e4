"""Presence head: whether each queried object is in the image at all, so that an absent object is
answered "not found" instead of with a mask (a model trained only on present objects paints one anyway).

Legend for shape comments: B batch, N classes, C mask channels, h×w mask-feature side, S mask side.
"""

from __future__ import annotations

import torch
from torch import nn

from groundiff.model.config import PRESENCE_INPUTS


class PresenceHead(nn.Module):
    """One presence logit per query, from its mask embedding and its mask logits' peak, mean and area;
    with `inputs="region"` also from what lies under its mask: the mask-weighted mean of the visual
    features, its product with the mask embedding, and a small CNN's reading of the mask's shape.

    Why the region: asked for a "red disc" beside a red ring, the masks paint the ring (a text encoder
    that reads a bag of words gives the two names nearly one embedding), so the mask's statistics look
    like a found object. What decides is whether the painted region looks like a disc.

    Its inputs are detached: the head reads what the decoder found and never reshapes it. Trained
    through the shared decoder, the presence loss (most queries are present, so it stays larger than
    the mask loss for long) took the decoder over and cost the masks about ten points of mIoU; the
    negative queries' empty-mask targets already teach the masks to stay empty for absent objects.
    """

    def __init__(self, channels: int, hidden: int = 64, inputs: str = "statistics") -> None:
        """
        Args:
            channels: width C of the mask embeddings (and of the visual features they are dotted with).
            hidden: width of the head's hidden layer.
            inputs: `statistics` (mask embedding and logit statistics) or `region` (also the region's
                features and the mask's shape).
        """
        super().__init__()
        if inputs not in PRESENCE_INPUTS:
            raise ValueError(f"Unknown presence inputs {inputs!r}; choose one of {', '.join(PRESENCE_INPUTS)}.")
        width = channels + 3  # mask embedding, logit peak, mean and area
        self.shape_reader: nn.Module | None = None
        if inputs == "region":
            shape_width = 32
            self.shape_reader = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, shape_width, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveMaxPool2d(1),
                nn.Flatten(),
            )
            width += 2 * channels + shape_width  # region mean, its product with the embedding, shape code
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(
        self,
        mask_embeddings: torch.Tensor,
        logits: torch.Tensor,
        mask_features: torch.Tensor | None = None,
        coarse_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            mask_embeddings: (B, N, C) float.
            logits: (B, N, S, S) mask logits of the same queries.
            mask_features: (B, C, h, w) visual features the logits were computed from (`region` only).
            coarse_logits: (B, N, h, w) the logits at their side (`region` only).
        Returns:
            (B, N) presence logits; the object is present where `sigmoid(logit) > 0.5`.
        """
        flat = logits.detach().flatten(2)  # (B, N, S·S)
        area = (flat > 0).float().mean(dim=2)  # share of pixels in the mask
        statistics = torch.stack([flat.amax(dim=2), flat.mean(dim=2), area], dim=2)  # (B, N, 3)
        embeddings = mask_embeddings.detach()
        parts = [embeddings, statistics.to(embeddings.dtype)]
        if self.shape_reader is not None:
            if mask_features is None or coarse_logits is None:
                raise ValueError("A presence head with region inputs needs mask_features and coarse_logits.")
            weights = coarse_logits.detach().sigmoid()  # (B, N, h, w)
            pooled = torch.einsum("bnhw,bchw->bnc", weights, mask_features.detach())  # (B, N, C)
            region = pooled / weights.flatten(2).sum(dim=2, keepdim=True).clamp_min(1e-3)  # mean under the mask
            batch, queries, height, width = weights.shape
            shape = self.shape_reader(weights.reshape(batch * queries, 1, height, width)).view(batch, queries, -1)
            parts += [region, region * embeddings, shape.to(embeddings.dtype)]
        return self.mlp(torch.cat(parts, dim=2)).squeeze(2)

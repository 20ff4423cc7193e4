"""Which queried objects the model answers "found": the rule that turns mask and presence logits into
an answer, shared by evaluation, `ground` and the Python API.

An object is found when its mask has a pixel, its presence probability (models with a presence output)
exceeds `presence_threshold`, and at least `min_own_share` of its mask is its own: pixels where no other
object asked with it is more probable.

Why the own share: asked for a "red disc" beside a red ring, CLIP's bag of words gives the two names
nearly one embedding and both masks paint the ring. The query that truly names the ring is the more
probable there, so the absent one keeps little of its mask. The rule needs the other objects asked in
the same call: an object asked alone keeps all of its mask.

A model may instead carry an answer score (`answer_weights`): a weighted sum of class-agnostic
statistics of each mask (`model.config.ANSWER_FEATURES`), found where it is above 0. Why: the presence output reads
the class's mask embedding, and for a class it never saw it says "absent" too often; statistics of the
mask itself read the same for any class.

Legend for shape comments: B batch, N queries, S mask side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# The `GroundingModelConfig` fields of the rule.
ANSWER_RULE_FIELDS = ("presence_threshold", "min_own_share", "answer_weights")
PEAK_LOGIT_BOUND = 20.0  # peaks beyond this say nothing more and would dominate a linear score


def answer_rule(config: Any) -> dict[str, Any]:
    """The answer rule of a `GroundingModelConfig` (or a tuning choice), as `found_queries`' keywords."""
    source = config if isinstance(config, dict) else vars(config)
    return {name: source[name] for name in ANSWER_RULE_FIELDS}


def answer_features(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """
    Args:
        logits: (B, N, S, S) mask logits.
        valid: (B, N) bool, False for padding slots (they never compete for pixels).
    Returns:
        (B, N, F) float32, the `model.config.ANSWER_FEATURES` of each query: its highest logit (clamped to ±20), the log
        of its mask's share of the image (1 pixel at least), the share of its mask where it is the most
        probable query, and the same share weighted by probabilities (its probability mass over that of
        every query, averaged over its own mass).
    """
    return _features(logits, *_probabilities(logits, valid))


def found_queries(
    logits: torch.Tensor,
    presence: torch.Tensor | None,
    valid: torch.Tensor,
    *,
    presence_threshold: float = 0.5,
    min_own_share: float = 0.0,
    answer_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """
    Args:
        logits: (B, N, S, S) mask logits (masks are `sigmoid > 0.5`).
        presence: (B, N) presence logits, or None for a model without a presence output.
        valid: (B, N) bool, False for padding slots (never found, never compete).
        presence_threshold: presence probability an object must exceed.
        min_own_share: share of its mask an object must keep against the other queries; 0 = no contest.
        answer_weights: weights of `answer_features` then a bias; the score must be above 0. None = off.
    Returns:
        (B, N) bool: True where the object is found.
    """
    probabilities, masks = _probabilities(logits, valid)
    area = masks.sum(dim=2)  # (B, N)
    found = valid & (area > 0)
    if presence is not None:
        found &= presence.detach().float().sigmoid() > presence_threshold
    if min_own_share > 0:
        found &= _own_pixels(probabilities, masks) >= min_own_share * area
    if answer_weights is not None:
        weights = torch.tensor(answer_weights, dtype=torch.float32, device=logits.device)
        found &= _features(logits, probabilities, masks) @ weights[:-1] + weights[-1] > 0
    return found


def _features(logits: torch.Tensor, probabilities: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`answer_features` from the logits and their `_probabilities`."""
    pixels = probabilities.shape[2]
    area = masks.sum(dim=2).float()  # (B, N)
    own = _own_pixels(probabilities, masks).float() / area.clamp_min(1.0)
    shares = probabilities / probabilities.sum(dim=1, keepdim=True).clamp_min(1e-6)  # (B, N, P)
    soft_own = (probabilities * shares).sum(dim=2) / probabilities.sum(dim=2).clamp_min(1e-6)
    peak = logits.detach().float().flatten(2).amax(dim=2).clamp(-PEAK_LOGIT_BOUND, PEAK_LOGIT_BOUND)
    log_area = torch.log(area.clamp_min(1.0) / pixels)
    return torch.stack([peak, log_area, own, soft_own], dim=2)


def _probabilities(logits: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, P) mask probabilities over the P = S·S pixels (0 for padding slots) and the masks (> 0.5)."""
    probabilities = logits.detach().float().sigmoid().masked_fill(~valid[:, :, None, None], 0.0).flatten(2)
    return probabilities, probabilities > 0.5


def _own_pixels(probabilities: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, N) pixels of each query's mask where it is the most probable query (ties: the first)."""
    winner = probabilities.argmax(dim=1, keepdim=True)  # (B, 1, P)
    slots = torch.arange(probabilities.shape[1], device=probabilities.device)[None, :, None]
    return (masks & (slots == winner)).sum(dim=2)

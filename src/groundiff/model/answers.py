"""Which queried objects the model answers "found": the rule that turns mask and presence logits into
an answer, shared by evaluation, `ground` and the Python API.

An object is found when its mask has a pixel, its presence probability (models with a presence output)
exceeds `presence_threshold`, and at least `min_own_share` of its mask is its own: pixels where no other
object asked with it is more probable.

Why the own share: asked for a "red disc" beside a red ring, CLIP's bag of words gives the two names
nearly one embedding and both masks paint the ring. The query that truly names the ring is the more
probable there, so the absent one keeps little of its mask. The rule needs the other objects asked in
the same call: an object asked alone keeps all of its mask.

Legend for shape comments: B batch, N queries, S mask side.
"""

from __future__ import annotations

from typing import Any

import torch

ANSWER_RULE_FIELDS = ("presence_threshold", "min_own_share")  # the `GroundingModelConfig` fields of the rule


def answer_rule(config: Any) -> dict[str, Any]:
    """The answer rule of a `GroundingModelConfig` (or a tuning choice), as `found_queries`' keywords."""
    source = config if isinstance(config, dict) else vars(config)
    return {name: source[name] for name in ANSWER_RULE_FIELDS}


def found_queries(
    logits: torch.Tensor,
    presence: torch.Tensor | None,
    valid: torch.Tensor,
    *,
    presence_threshold: float = 0.5,
    min_own_share: float = 0.0,
) -> torch.Tensor:
    """
    Args:
        logits: (B, N, S, S) mask logits (masks are `sigmoid > 0.5`).
        presence: (B, N) presence logits, or None for a model without a presence output.
        valid: (B, N) bool, False for padding slots (never found, never compete).
        presence_threshold: presence probability an object must exceed.
        min_own_share: share of its mask an object must keep against the other queries; 0 = no contest.
    Returns:
        (B, N) bool: True where the object is found.
    """
    probabilities = logits.detach().float().sigmoid().masked_fill(~valid[:, :, None, None], 0.0)
    masks = probabilities > 0.5  # (B, N, S, S)
    area = masks.flatten(2).sum(dim=2)  # (B, N)
    found = valid & (area > 0)
    if presence is not None:
        found &= presence.detach().float().sigmoid() > presence_threshold
    if min_own_share > 0:
        winner = probabilities.argmax(dim=1, keepdim=True)  # (B, 1, S, S): the most probable query
        slots = torch.arange(logits.shape[1], device=logits.device)[None, :, None, None]
        own = (masks & (slots == winner)).flatten(2).sum(dim=2)  # (B, N)
        found &= own >= min_own_share * area
    return found

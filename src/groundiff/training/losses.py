"""Losses of the grounding model, by name: the paper's BCE + log(cosh(Dice)) and the ablation's others.

Legend for shape comments: B batch, N classes, P valid (image, class) pairs, H×W mask side.
Every loss is computed per (image, class) pair and averaged over the valid pairs; `sigmoid` is
applied once, to the logits (the reference applied it twice in its log-cosh loss).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PairLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per pair, mean over pixels: (P, H, W) logits and {0, 1} targets → (P,)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(dim=1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss per pair, in [0, 1): 1 − (2·Σ m_gt·m + 1) / (Σ m_gt + Σ m + 1) with m = sigmoid(logits),
    sums over the pair's pixels. (P, H, W) → (P,)."""
    probabilities = torch.sigmoid(logits).flatten(1)  # (P, H·W)
    targets = targets.flatten(1)  # (P, H·W)
    overlap = (probabilities * targets).sum(dim=1)
    return 1 - (2 * overlap + 1) / (targets.sum(dim=1) + probabilities.sum(dim=1) + 1)


def dice_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice + BCE per pair: (P, H, W) → (P,)."""
    return dice_loss(logits, targets) + bce_loss(logits, targets)


def bce_logcosh_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The paper's loss per pair, BCE + log(cosh(Dice)): (P, H, W) → (P,)."""
    return bce_loss(logits, targets) + torch.log(torch.cosh(dice_loss(logits, targets)))


LOSSES: dict[str, PairLoss] = {
    "bce": bce_loss,
    "dice": dice_loss,
    "dice+bce": dice_bce_loss,
    "bce+logcosh-dice": bce_logcosh_dice_loss,
}
DEFAULT_LOSS = "bce+logcosh-dice"


def grounding_loss(
    name: str,
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss `name` averaged over the valid (image, class) pairs.

    Args:
        name: a key of `LOSSES`.
        logits: (B, N, H, W) mask logits, any float dtype (computed in float32).
        targets: (B, N, H, W) ground-truth masks, float or bool in {0, 1}.
        valid: (B, N) bool, False for padding slots.
        present: (B, N) bool, False for negative queries (objects not in the image); None = all present.
            A negative's empty target is learnt with BCE alone: its Dice term stays near 1 unless every
            pixel's probability is exactly 0, and chasing that would shrink the present objects' masks.
    Returns:
        scalar float32 tensor.
    Raises:
        ValueError: an unknown name (lists the known ones), mismatched shapes, or no valid pair.
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; choose one of {', '.join(LOSSES)}.")
    if logits.dim() != 4 or logits.shape != targets.shape or valid.shape != logits.shape[:2]:
        raise ValueError(
            "grounding_loss needs logits and targets of the same (B, N, H, W) shape and valid of shape (B, N); "
            f"got logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, valid {tuple(valid.shape)}."
        )
    valid = valid.bool()
    if not valid.any():
        raise ValueError("grounding_loss got no valid (image, class) pair: every slot of `valid` is False.")
    per_pair = LOSSES[name](logits[valid].float(), targets[valid].float())  # (P,)
    if present is not None:
        negative = ~present.bool()[valid]  # (P,)
        per_pair = torch.where(negative, bce_loss(logits[valid].float(), targets[valid].float()), per_pair)
    return per_pair.mean()


def word_loss(
    name: str, token_logits: torch.Tensor, word_targets: torch.Tensor, token_valid: torch.Tensor
) -> torch.Tensor:
    """Loss `name` of each name token's own mask (token queries), averaged over the real tokens.

    Args:
        token_logits: (B, N, K, h, w) logits of every token, at the mask features' side; upsampled
            bilinearly to the targets' side, as the class logits are.
        word_targets: (B, N, K, H, W) each token's target (`GroundingBatch.word_targets`).
        token_valid: (B, N, K) bool, False for padded tokens and padding slots.
    Returns:
        scalar float32 tensor. A token whose word names nothing in the image is learnt as a negative
        query is, with BCE alone (see `grounding_loss`).
    """
    slots = word_targets.shape[:3]
    if token_logits.dim() != 5 or token_logits.shape[:3] != slots or token_valid.shape != slots:
        raise ValueError(
            "word_loss needs (B, N, K, h, w) token logits, (B, N, K, H, W) word targets and (B, N, K) token_valid; got "
            f"{tuple(token_logits.shape)}, {tuple(word_targets.shape)} and {tuple(token_valid.shape)}."
        )
    logits = F.interpolate(
        token_logits.flatten(1, 2).float(), size=word_targets.shape[-2:], mode="bilinear", align_corners=False
    )  # (B, N·K, H, W)
    targets = word_targets.flatten(1, 2)
    return grounding_loss(name, logits, targets, token_valid.flatten(1), present=targets.flatten(2).amax(dim=2) > 0)


def presence_loss(presence: torch.Tensor, present: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the presence logits, averaged over the valid (image, query) pairs.

    Args:
        presence: (B, N) presence logits, any float dtype (computed in float32).
        present: (B, N) bool, True where the queried object is in the image.
        valid: (B, N) bool, False for padding slots.
    Returns:
        scalar float32 tensor.
    """
    if presence.shape != present.shape or presence.shape != valid.shape:
        raise ValueError(
            "presence_loss needs presence, present and valid of one (B, N) shape; got "
            f"{tuple(presence.shape)}, {tuple(present.shape)} and {tuple(valid.shape)}."
        )
    valid = valid.bool()
    return F.binary_cross_entropy_with_logits(presence[valid].float(), present[valid].float())

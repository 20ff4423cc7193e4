"""Grounding losses against hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from groundiff.training.losses import DEFAULT_LOSS, LOSSES, grounding_loss

# One (image, class) pair of two pixels: logits 0 and ln 3 → probabilities 0.5 and 0.75; targets 0 and 1.
LOGITS = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)  # (B, N, H, W)
TARGETS = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
VALID = torch.ones(1, 1, dtype=torch.bool)
BCE = (math.log(2.0) - math.log(0.75)) / 2  # mean of −log(1 − 0.5) and −log(0.75)
DICE = 1 - (2 * 0.75 + 1) / (1 + 1.25 + 1)  # = 3/13
EXPECTED = {
    "bce": BCE,
    "dice": DICE,
    "dice+bce": DICE + BCE,
    "bce+logcosh-dice": BCE + math.log(math.cosh(DICE)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_matches_hand_value(name: str) -> None:
    loss = grounding_loss(name, LOGITS, TARGETS, VALID)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(EXPECTED[name], rel=1e-6)


def test_registry_holds_exactly_the_ablation_losses() -> None:
    assert set(LOSSES) == set(EXPECTED)
    assert DEFAULT_LOSS == "bce+logcosh-dice"


def test_sigmoid_applied_once() -> None:
    """Regression: the reference passed sigmoid(logits) to BCE-with-logits (a second sigmoid)."""
    double = F.binary_cross_entropy_with_logits(torch.sigmoid(LOGITS), TARGETS).item()
    loss = grounding_loss("bce+logcosh-dice", LOGITS, TARGETS, VALID).item()
    assert loss == pytest.approx(EXPECTED["bce+logcosh-dice"], rel=1e-6)
    assert abs(loss - (double + math.log(math.cosh(DICE)))) > 0.05


def test_average_over_valid_pairs_only() -> None:
    # Two images, two slots each; image 1's second slot is padding filled with junk.
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 1, 2)
    logits[0, 0] = LOGITS[0, 0]
    targets = torch.randint(0, 2, (2, 2, 1, 2)).float()
    targets[0, 0] = TARGETS[0, 0]
    valid = torch.tensor([[True, False], [True, True]])
    per_pair = [
        grounding_loss("bce", logits[b : b + 1, n : n + 1], targets[b : b + 1, n : n + 1], VALID)
        for b, n in ((0, 0), (1, 0), (1, 1))
    ]
    loss = grounding_loss("bce", logits, targets, valid)
    assert loss.item() == pytest.approx(sum(p.item() for p in per_pair) / 3, rel=1e-6)
    assert per_pair[0].item() == pytest.approx(BCE, rel=1e-6)


def test_gradient_reaches_logits() -> None:
    logits = LOGITS.clone().requires_grad_()
    grounding_loss(DEFAULT_LOSS, logits, TARGETS, VALID).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="bce\\+logcosh-dice"):
        grounding_loss("focal", LOGITS, TARGETS, VALID)


def test_no_valid_pair_and_bad_shapes_are_errors() -> None:
    with pytest.raises(ValueError, match="no valid"):
        grounding_loss("bce", LOGITS, TARGETS, ~VALID)
    with pytest.raises(ValueError, match="same"):
        grounding_loss("bce", LOGITS, TARGETS[..., :1], VALID)

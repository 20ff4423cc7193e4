"""Category-wise and per-image mIoU on a hand-computed example where they differ."""

from __future__ import annotations

import pytest
import torch

from groundiff.evaluation.metrics import IoUAccumulator, masks_from_logits


def masks(*rows: str) -> torch.Tensor:
    """(N, 1, W) bool masks from strings of 0/1 pixels, one string per class."""
    return torch.tensor([[[c == "1" for c in row]] for row in rows])


# Image 1, classes (dog, cat): dog I=2 U=2; cat I=0 U=2.   Image 2, class (dog): I=1 U=4.
PRED_1, TARGET_1 = masks("1100", "0010"), masks("1100", "0001")
PRED_2, TARGET_2 = masks("1100"), masks("1011")
# Category-wise: dog (2 + 1) / (2 + 4) = 0.5, cat 0 / 2 = 0  → mIoU 0.25.
# Per image: image 1 (1 + 0) / 2 = 0.5, image 2 1/4 = 0.25 → mean 0.375.


def hand_example() -> IoUAccumulator:
    accumulator = IoUAccumulator()
    accumulator.update(PRED_1, TARGET_1, ["dog", "cat"])
    accumulator.update(PRED_2, TARGET_2, ["dog"])
    return accumulator


def test_category_and_per_image_miou_differ_as_computed_by_hand() -> None:
    accumulator = hand_example()
    assert accumulator.per_class() == {"cat": 0.0, "dog": 0.5}
    assert accumulator.category_miou() == pytest.approx(0.25)
    assert accumulator.image_miou() == pytest.approx(0.375)
    assert accumulator.samples == 2
    assert accumulator.summary() == {
        "miou": pytest.approx(0.25),
        "miou_ci95": [0.25, 0.5],
        "miou_per_image": pytest.approx(0.375),
        "per_class": {"cat": 0.0, "dog": 0.5},
        "classes_covered": 2,
        "samples": 2,
    }


def test_bootstrap_interval_by_hand() -> None:
    # Resamples of the two images: (1, 1) → dog 1.0, cat 0 → 0.5; (2, 2) → dog only, 0.25;
    # (1, 2) → the full set, 0.25. P = 1/4, 1/4, 1/2, so the 2.5th and 97.5th percentiles are 0.25 and 0.5.
    assert hand_example().bootstrap_ci(resamples=2000) == (0.25, 0.5)


def test_bootstrap_interval_shrinks_with_more_images_and_is_seeded() -> None:
    small, large = IoUAccumulator(), IoUAccumulator()
    generator = torch.Generator().manual_seed(0)
    for index in range(200):
        pred, target = torch.rand(2, 8, 8, generator=generator) > 0.5, torch.rand(2, 8, 8, generator=generator) > 0.5
        names = ["dog", "cat"] if index % 2 else ["dog", "cow"]
        large.update(pred, target, names)
        if index < 20:
            small.update(pred, target, names)
    small_low, small_high = small.bootstrap_ci()
    large_low, large_high = large.bootstrap_ci()
    assert small_low < small.category_miou() < small_high
    assert large_low < large.category_miou() < large_high
    assert (large_high - large_low) < 0.5 * (small_high - small_low)
    assert large.bootstrap_ci(seed=3) == large.bootstrap_ci(seed=3) != large.bootstrap_ci(seed=4)


def test_identical_images_give_a_point_interval() -> None:
    accumulator = IoUAccumulator()
    for _ in range(5):
        accumulator.update(PRED_1, TARGET_1, ["dog", "cat"])
    assert accumulator.bootstrap_ci() == (0.5, 0.5)


def test_padded_batch_equals_single_images() -> None:
    # Image 2 has one class: its second slot is padding with junk masks, ignored.
    pred = torch.stack([PRED_1, torch.cat([PRED_2, masks("1111")])])  # (B, N, H, W)
    target = torch.stack([TARGET_1, torch.cat([TARGET_2, masks("0000")])])
    batched = IoUAccumulator()
    batched.update(pred, target, [["dog", "cat"], ["dog"]])
    assert batched.summary() == hand_example().summary()


def test_merge_adds_counts() -> None:
    first, second = IoUAccumulator(), IoUAccumulator()
    first.update(PRED_1, TARGET_1, ["dog", "cat"])
    second.update(PRED_2, TARGET_2, ["dog"])
    first.merge(second)
    assert first.summary() == hand_example().summary()


def test_empty_union_counts_as_zero_and_absent_class_is_not_reported() -> None:
    accumulator = IoUAccumulator()
    accumulator.update(masks("0000"), masks("0000"), ["cow"])
    assert accumulator.per_class() == {"cow": 0.0}
    assert accumulator.image_miou() == 0.0
    assert "dog" not in accumulator.per_class()


def test_empty_accumulator_and_bad_inputs_are_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        IoUAccumulator().category_miou()
    with pytest.raises(ValueError, match="empty"):
        IoUAccumulator().image_miou()
    with pytest.raises(ValueError, match="class_names"):
        IoUAccumulator().update(PRED_1, TARGET_1, ["dog"])
    with pytest.raises(ValueError, match="same"):
        IoUAccumulator().update(PRED_1, TARGET_2, ["dog", "cat"])
    with pytest.raises(ValueError, match="class_names"):
        IoUAccumulator().update(PRED_1[None], TARGET_1[None], ["dog", "cat"])


def test_predictions_are_sigmoid_above_half() -> None:
    logits = torch.tensor([-1.0, 0.0, 1e-3, 3.0])
    assert masks_from_logits(logits).tolist() == [False, False, True, True]

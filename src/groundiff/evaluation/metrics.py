"""Intersection over union of predicted and ground-truth masks, accumulated over a test set.

Two figures are reported:
- **category-wise mIoU** (`IoUAccumulator.category_miou`, the headline number): for each class c,
  IoU_c = Σ_i I_{i,c} / Σ_i U_{i,c}, where i runs over the images whose class list contains c and
  I, U are the pixel counts of intersection and union of that image's predicted and ground-truth
  mask of c; the mIoU is the unweighted mean of IoU_c over the classes seen at least once.
  IoU_c is 0 when Σ_i U_{i,c} = 0 (every mask of c empty and predicted empty).
- **per-image mIoU** (`IoUAccumulator.image_miou`, the reference code's figure): the mean over
  images of the mean over the image's classes of I_{i,c} / U_{i,c}, taking 0 when U_{i,c} = 0.

Uncertainty: `IoUAccumulator.bootstrap_ci` resamples the test images with replacement and recomputes
the category-wise mIoU on each resample; the 2.5th and 97.5th percentiles are its 95 % interval.

Predicted masks are `sigmoid(logits) > 0.5` (`masks_from_logits`).
Legend for shape comments: B batch, N classes, H×W mask side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def masks_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Predicted masks: bool tensor of the logits' shape, `sigmoid(logits) > 0.5`."""
    return torch.sigmoid(logits.float()) > 0.5


def bootstrap_weights(count: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, count) int: how often each of `count` items is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, count, count), minlength=count) for _ in range(resamples)])


class IoUAccumulator:
    """Accumulates per-class intersections and unions, and per-image mean IoUs, over `update` calls."""

    def __init__(self) -> None:
        self.intersections: dict[str, int] = {}
        self.unions: dict[str, int] = {}
        self.image_mious: list[float] = []
        # Per image: its class names and their intersections and unions, for the bootstrap.
        self.image_counts: list[tuple[list[str], list[int], list[int]]] = []

    @property
    def samples(self) -> int:
        """Number of images accumulated."""
        return len(self.image_mious)

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, class_names: Sequence[str] | Sequence[Sequence[str]]
    ) -> None:
        """Add one image or a batch.

        Args:
            pred: (N, H, W) or (B, N, H, W) bool predicted masks (see `masks_from_logits`).
            target: ground-truth masks of the same shape, bool or {0, 1}.
            class_names: for one image, its N class names; for a batch, one list per image of length
                n_b ≤ N naming the first n_b slots (the remaining slots are padding and ignored).
        Raises:
            ValueError: mismatched shapes or class-name counts.
        """
        if pred.shape != target.shape or pred.dim() not in (3, 4):
            raise ValueError(
                "IoUAccumulator.update needs pred and target of the same (N, H, W) or (B, N, H, W) shape; "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}."
            )
        if pred.dim() == 3:
            if len(class_names) != pred.shape[0] or any(not isinstance(n, str) for n in class_names):
                raise ValueError(
                    f"For one image, class_names must be {pred.shape[0]} strings (one per mask); got {class_names!r}."
                )
            pred, target = pred[None], target[None]  # (1, N, H, W)
            batch_names = [[str(n) for n in class_names]]
        else:
            if len(class_names) != pred.shape[0] or any(
                isinstance(names, str) or len(names) > pred.shape[1] for names in class_names
            ):
                raise ValueError(
                    f"For a batch, class_names must hold {pred.shape[0]} lists of at most {pred.shape[1]} names; "
                    f"got {class_names!r}."
                )
            batch_names = [[str(name) for name in names] for names in class_names]
        pred, target = pred.bool().flatten(2), target.bool().flatten(2)  # (B, N, H·W)
        intersections = (pred & target).sum(dim=2).tolist()  # (B, N)
        unions = (pred | target).sum(dim=2).tolist()  # (B, N)
        for names, image_i, image_u in zip(batch_names, intersections, unions, strict=True):
            ious = []
            self.image_counts.append((names, image_i[: len(names)], image_u[: len(names)]))
            for name, i, u in zip(names, image_i, image_u, strict=False):
                self.intersections[name] = self.intersections.get(name, 0) + i
                self.unions[name] = self.unions.get(name, 0) + u
                ious.append(i / u if u else 0.0)
            self.image_mious.append(sum(ious) / len(ious) if ious else 0.0)

    def merge(self, other: IoUAccumulator) -> None:
        """Add the counts of `other` (e.g. gathered from another process)."""
        for name, i in other.intersections.items():
            self.intersections[name] = self.intersections.get(name, 0) + i
            self.unions[name] = self.unions.get(name, 0) + other.unions[name]
        self.image_mious.extend(other.image_mious)
        self.image_counts.extend(other.image_counts)

    def _require_samples(self) -> None:
        if not self.samples:
            raise ValueError("IoUAccumulator is empty: call update() with at least one image before reading the mIoU.")

    def per_class(self) -> dict[str, float]:
        """Class → IoU_c (accumulated over the images containing c), sorted by class name."""
        self._require_samples()
        return {name: self.intersections[name] / u if (u := self.unions[name]) else 0.0 for name in sorted(self.unions)}

    def category_miou(self) -> float:
        """Mean over classes of IoU_c: the category-wise mIoU, in [0, 1]."""
        per_class = self.per_class()
        if not per_class:
            raise ValueError("IoUAccumulator holds images but no classes: give each image at least one class name.")
        return sum(per_class.values()) / len(per_class)

    def image_miou(self) -> float:
        """Mean over images of the per-image mean IoU (the reference code's mIoU), in [0, 1]."""
        self._require_samples()
        return sum(self.image_mious) / len(self.image_mious)

    @property
    def classes_covered(self) -> int:
        """Number of classes the category-wise mean runs over (those named by at least one image)."""
        return len(self.unions)

    def bootstrap_ci(self, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
        """Percentile bootstrap interval of the category-wise mIoU (in [0, 1]) over the images.

        Each resample draws `samples` images with replacement and recomputes every IoU_c from the drawn
        images' counts; a class none of the drawn images names leaves that resample's mean, as it
        would leave the mean of such a test set. Seeded: the same counts give the same interval.
        """
        self._require_samples()
        names = sorted(self.unions)
        column = {name: c for c, name in enumerate(names)}
        n, k = self.samples, len(names)
        inter, union, named = np.zeros((n, k)), np.zeros((n, k)), np.zeros((n, k))  # (images, classes)
        for row, (image_names, image_i, image_u) in enumerate(self.image_counts):
            for name, i, u in zip(image_names, image_i, image_u, strict=True):
                inter[row, column[name]] += i
                union[row, column[name]] += u
                named[row, column[name]] = 1
        weights = bootstrap_weights(n, resamples, seed)  # (R, n)
        i_sum, u_sum, present = weights @ inter, weights @ union, (weights @ named) > 0  # (R, classes) each
        iou = np.divide(i_sum, u_sum, out=np.zeros_like(i_sum), where=u_sum > 0)
        means = (iou * present).sum(axis=1) / present.sum(axis=1)  # (R,)
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(means, [tail, 100 - tail])
        return float(low), float(high)

    def summary(self) -> dict[str, Any]:
        """The evaluation JSON of one set: mIoU with its 95 % bootstrap interval, per-image mIoU, per class,
        the number of classes the mean covers and of images."""
        return {
            "miou": self.category_miou(),
            "miou_ci95": list(self.bootstrap_ci()),
            "miou_per_image": self.image_miou(),
            "per_class": self.per_class(),
            "classes_covered": self.classes_covered,
            "samples": self.samples,
        }


def proportion_ci95(successes: int, total: int) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion `successes / total`, in [0, 1] (exact at 0 and 1
    counts, unlike the normal approximation)."""
    if total < 1 or not 0 <= successes <= total:
        raise ValueError(f"A proportion needs 0 <= successes <= total and total >= 1; got {successes} of {total}.")
    z = 1.959963984540054
    rate = successes / total
    centre = (rate + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(rate * (1 - rate) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def ratio_ci95(
    numerators: np.ndarray, denominators: np.ndarray, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of Σ numerators / Σ denominators, resampling the items
    (images) with replacement; seeded, so the same counts give the same interval."""
    if numerators.shape != denominators.shape or numerators.ndim != 1 or not len(numerators):
        raise ValueError(
            f"ratio_ci95 needs two 1-D arrays of one non-zero length; got {numerators.shape} and {denominators.shape}."
        )
    weights = bootstrap_weights(len(numerators), resamples, seed)  # (R, n)
    top, bottom = weights @ numerators, weights @ denominators  # (R,)
    ratios = np.divide(top, bottom, out=np.zeros_like(top, dtype=float), where=bottom > 0)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)

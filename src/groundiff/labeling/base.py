"""The `Labeler` interface shared by Mask R-CNN, the mini-world labeler and test stubs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class LabelResult:
    """Masks a labeler found in one image, restricted to the classes it was asked for.

    Attributes:
        masks: class name → (H, W) bool mask, only for classes that were found.
        scores: class name → detection confidence in [0, 1] of that mask.
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def missing(self, class_names: Sequence[str]) -> list[str]:
        """The requested classes the labeler did not find (the discard rule drops such samples)."""
        return [name for name in class_names if name not in self.masks]


@runtime_checkable
class Labeler(Protocol):
    """Anything that segments named classes in RGB images.

    `vocabulary` lists the class names it can find; `label` takes images (N, H, W, 3) uint8 in
    [0, 255] and, per image, the class names to look for; it returns one `LabelResult` per image.
    """

    vocabulary: tuple[str, ...]

    def label(self, images: np.ndarray, class_names: Sequence[Sequence[str]]) -> list[LabelResult]: ...

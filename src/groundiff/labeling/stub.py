"""A stand-in labeler for tests and smoke runs with the tiny random-weight pipelines (`groundiff.sd.tiny`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from groundiff.labeling.base import LabelResult


class StubLabeler:
    """A deterministic stand-in for a real labeler: it "finds" a class unless a hash of the image and
    the class name falls under `miss_rate`, and segments the brighter half of the image as its mask.

    The discard rule, the retry loop and storage then run exactly as with Mask R-CNN.
    """

    def __init__(self, vocabulary: tuple[str, ...], miss_rate: float = 0.3) -> None:
        self.vocabulary = vocabulary
        self.miss_rate = miss_rate

    def label(self, images: np.ndarray, class_names: Sequence[Sequence[str]]) -> list[LabelResult]:
        results = []
        for image, names in zip(images, class_names, strict=True):
            gray = image.astype(np.float32).mean(axis=-1)  # (H, W)
            result = LabelResult()
            for position, name in enumerate(names):
                digest = hashlib.sha256(image.tobytes() + name.encode()).digest()
                if digest[0] / 256 < self.miss_rate:
                    continue
                result.masks[name] = gray > np.median(gray) if position % 2 == 0 else gray <= np.median(gray)
                result.scores[name] = 0.5 + digest[1] / 512
            results.append(result)
        return results

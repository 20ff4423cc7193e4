"""The mini world's labeler: a small segmentation net behind the same `Labeler` interface as Mask R-CNN."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from groundiff.labeling.base import LabelResult
from groundiff.miniworld.models import SegmentationNet
from groundiff.miniworld.vocabulary import CLASSES


class MiniWorldLabeler:
    """Segments the 20 mini-world classes in (N, H, W, 3) uint8 renders or generated images.

    Each pixel takes the arg-max of background + 20 class logits over *all* classes, so an object
    drawn as the wrong class is found as that class and not as the prompted one (the discard rule
    then drops the sample). A prompted class counts as found when its mask, opened by a 3×3 square
    (which removes scattered pixels and strokes under 3 px), keeps at least `min_pixels` pixels;
    the returned mask is the unopened one and its score the mean softmax probability over it.
    """

    vocabulary: tuple[str, ...] = CLASSES

    def __init__(self, net: SegmentationNet, *, min_pixels: int = 24, batch_size: int = 64) -> None:
        self.net = net.eval()
        self.min_pixels = min_pixels
        self.batch_size = batch_size

    @classmethod
    def from_folder(cls, folder: Path, **kwargs: int) -> MiniWorldLabeler:
        """Load `config.json` + `model.safetensors` (fp16 on disk, float32 in memory) from `folder`."""
        folder = Path(folder)
        if not (folder / "model.safetensors").exists():
            raise FileNotFoundError(f"No mini-world labeler in {folder}: expected config.json and model.safetensors.")
        config = json.loads((folder / "config.json").read_text())
        net = SegmentationNet(width=config["width"], num_classes=len(config["classes"]))
        net.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
        return cls(net, **kwargs)

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 3) uint8 → labels (N, H, W) int64 (0 background, 1 + class index), probs (N, 21, H, W)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"Expected images of shape (N, H, W, 3) and dtype uint8, got {images.shape} {images.dtype}."
            )
        probs = []
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[start : start + self.batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1
            probs.append(self.net(x).softmax(dim=1))  # (B, 21, H, W)
        prob = torch.cat(probs).numpy()
        return prob.argmax(axis=1), prob

    def label(self, images: np.ndarray, class_names: Sequence[Sequence[str]]) -> list[LabelResult]:
        """One `LabelResult` per image holding the prompted classes found (see the class docstring)."""
        if len(images) != len(class_names):
            raise ValueError(f"Got {len(images)} images but {len(class_names)} class lists; pass one list per image.")
        labels, prob = self.predict(images)
        results = []
        for i, names in enumerate(class_names):
            result = LabelResult()
            for name in names:
                if name not in CLASSES:
                    raise ValueError(f"The mini-world labeler does not know {name!r}; its classes are {CLASSES}.")
                channel = CLASSES.index(name) + 1
                mask = labels[i] == channel
                if open_mask(mask).sum() >= self.min_pixels:
                    result.masks[name] = mask
                    result.scores[name] = float(prob[i, channel][mask].mean())
            results.append(result)
        return results


def _erode_or_dilate(mask: np.ndarray, erode: bool) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)  # (H + 2, W + 2)
    height, width = mask.shape
    shifts = [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.logical_and.reduce(shifts) if erode else np.logical_or.reduce(shifts)


def open_mask(mask: np.ndarray) -> np.ndarray:
    """Morphological opening of an (H, W) bool mask with a 3×3 square: erosion, then dilation."""
    return _erode_or_dilate(_erode_or_dilate(mask, erode=True), erode=False)


def confusion_iou(predicted: np.ndarray, truth: np.ndarray, num_labels: int = 1 + len(CLASSES)) -> np.ndarray:
    """Per-label IoU over a whole set from (N, H, W) integer label maps; NaN for labels absent from both."""
    confusion = np.bincount(truth.ravel().astype(np.int64) * num_labels + predicted.ravel(), minlength=num_labels**2)
    confusion = confusion.reshape(num_labels, num_labels)  # (truth, predicted)
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return intersection / union


def class_miou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean IoU in percent over the 20 object classes (background excluded) present in the set."""
    return float(np.nanmean(confusion_iou(predicted, truth)[1:]) * 100)

"""Pictures people would rather look at than read: mask overlays, per-class IoU charts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Overlay colours, RGB in [0, 1]: magenta and cyan first, which stand out on natural images and on the
# mini world's red, green, blue and yellow objects alike.
PALETTE = np.array(
    [(0.95, 0.0, 0.85), (0.0, 0.95, 0.95), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.6, 0.3, 0.0), (0.5, 0.5, 1.0)]
)


def overlay(image: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 image with each (H, W) bool mask tinted in its palette colour."""
    out = image.astype(np.float32) / 255
    for position, mask in enumerate(masks):
        mask = _resize_nearest(mask, out.shape[:2])
        colour = PALETTE[position % len(PALETTE)]
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
        out[_outline(mask)] = colour  # a solid edge keeps the mask readable on any background
    return (out * 255).round().astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == size:
        return mask.astype(bool)
    rows = np.arange(size[0]) * mask.shape[0] // size[0]
    cols = np.arange(size[1]) * mask.shape[1] // size[1]
    return mask[rows][:, cols].astype(bool)


def save_figure(figure: Any, path: Path) -> Path:
    """Save and close a matplotlib figure atomically."""
    temp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    figure.savefig(temp, dpi=110, bbox_inches="tight")
    plt.close(figure)
    os.replace(temp, path)
    return path


def legend_handles(class_names: Sequence[str]) -> list[Any]:
    from matplotlib.patches import Patch

    return [Patch(color=PALETTE[i % len(PALETTE)], label=name) for i, name in enumerate(class_names)]


def overlay_grid(examples: dict[str, list[tuple[Any, np.ndarray]]], path: Path) -> Path:
    """Rows of image / ground truth / prediction for a few samples of each set."""
    rows = [(name, record, predicted) for name, items in examples.items() for record, predicted in items]
    figure, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
    for row, (name, record, predicted) in enumerate(rows):
        panels = [
            (record.image, "image"),
            (overlay(record.image, record.masks), "exact" if record.meta.get("labeler") == "exact" else "labeler"),
            (overlay(record.image, list(predicted)), "grounding"),
        ]
        for column, (picture, title) in enumerate(panels):
            axes[row, column].imshow(picture, interpolation="nearest")
            axes[row, column].set_axis_off()
            axes[row, column].set_title(f"{name}: {title}" if column == 0 else title, fontsize=8)
        axes[row, 2].legend(handles=legend_handles(record.classes), fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return save_figure(figure, path)


def per_class_chart(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """One horizontal bar chart of per-class IoU per test set."""
    figure, axes = plt.subplots(
        1,
        len(results),
        figsize=(4 * len(results), 0.3 * max(len(r["per_class"]) for r in results.values()) + 1.5),
        squeeze=False,
    )
    for axis, (name, row) in zip(axes[0], results.items(), strict=True):
        classes = list(row["per_class"])
        axis.barh(classes, [row["per_class"][c] for c in classes], color=PALETTE[1])
        axis.set(xlim=(0, 100), xlabel="IoU (%)", title=f"{name}: mIoU {row['miou']:.1f}")
        axis.invert_yaxis()
    figure.tight_layout()
    return save_figure(figure, path)

"""Masks as a COCO document: one image, one category and one annotation per named object.

Masks are stored as uncompressed RLE (`{"size": [h, w], "counts": [...]}`, runs over the
column-major pixels, starting with a run of zeros), which `pycocotools` reads as it reads its own
compressed form; no dependency is needed to write it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE of a (H, W) boolean mask."""
    if mask.ndim != 2:
        raise ValueError(f"A mask must be (H, W); got shape {mask.shape}.")
    pixels = np.asarray(mask, dtype=np.int8).flatten(order="F")
    starts = np.flatnonzero(np.diff(pixels)) + 1  # where each run after the first begins
    counts = np.diff(np.concatenate([[0], starts, [pixels.size]])).tolist()
    if pixels.size and pixels[0]:
        counts = [0, *counts]  # COCO's first run counts zeros
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """The (H, W) boolean mask of an uncompressed RLE written by `rle_encode`."""
    height, width = rle["size"]
    values = np.repeat(np.arange(len(rle["counts"])) % 2 == 1, rle["counts"])
    if values.size != height * width:
        raise ValueError(f"RLE counts sum to {values.size}, not {height}x{width}={height * width} pixels.")
    return values.reshape((height, width), order="F")


def coco_document(
    file_name: str, masks: Mapping[str, np.ndarray], *, scores: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """A COCO document for one image: a category per object (in order), an annotation per non-empty mask."""
    names = list(masks)
    if not names:
        raise ValueError("No masks to write; name at least one object.")
    height, width = next(iter(masks.values())).shape
    annotations: list[dict[str, Any]] = []
    for index, name in enumerate(names):
        mask = np.asarray(masks[name], dtype=bool)
        if not mask.any():
            continue  # COCO has no empty annotations; the category stays listed
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = [int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)]
        annotation = {
            "id": len(annotations) + 1,
            "image_id": 1,
            "category_id": index + 1,
            "segmentation": rle_encode(mask),
            "area": int(mask.sum()),
            "bbox": box,
            "iscrowd": 0,
        }
        if scores is not None and name in scores:
            annotation["score"] = float(scores[name])
        annotations.append(annotation)
    return {
        "images": [{"id": 1, "file_name": file_name, "height": int(height), "width": int(width)}],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(names)],
        "annotations": annotations,
    }

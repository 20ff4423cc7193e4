"""Masks as COCO documents: one image with a category per named object, or a whole dataset (`CocoBuilder`).

Masks are stored as uncompressed RLE (`{"size": [h, w], "counts": [...]}`, runs over the
column-major pixels, starting with a run of zeros), which `pycocotools` reads as it reads its own
compressed form; no dependency is needed to write it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def mask_annotation(mask: np.ndarray, *, annotation_id: int, image_id: int, category_id: int) -> dict[str, Any]:
    """The COCO annotation of one non-empty (H, W) bool mask: RLE segmentation, area and box (x, y, w, h)."""
    mask = np.asarray(mask, dtype=bool)
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        raise ValueError(f"Annotation {annotation_id} has an empty mask; COCO has no empty annotations.")
    box = [int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)]
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle_encode(mask),
        "area": int(mask.sum()),
        "bbox": box,
        "iscrowd": 0,
    }


class CocoBuilder:
    """A whole-dataset COCO document built image by image over a fixed category list (ids 1..K in order).

    Each image's masks are given by category name; an empty mask adds no annotation (the category stays
    listed). `document()` returns the document, readable by `pycocotools.coco.COCO`.
    """

    def __init__(self, categories: Sequence[str]) -> None:
        if not categories:
            raise ValueError("A COCO document needs at least one category; name the classes to export.")
        if len(set(categories)) != len(categories):
            raise ValueError(f"Categories {list(categories)} repeat a name; list each class once.")
        self.category_ids = {name: index + 1 for index, name in enumerate(categories)}
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add_image(
        self,
        file_name: str,
        masks: Mapping[str, np.ndarray],
        *,
        scores: Mapping[str, float] | None = None,
        size: tuple[int, int] | None = None,
    ) -> int:
        """Add one image with its (H, W) bool masks by category name; returns its image id.

        Raises:
            ValueError: a mask names an unknown category, or no `size` is given for an image without masks.
        """
        unknown = [name for name in masks if name not in self.category_ids]
        if unknown:
            raise ValueError(
                f"Image {file_name!r} has a mask of {unknown[0]!r}, which is not among the exported classes "
                f"{list(self.category_ids)}; add it to the class list."
            )
        if size is None and not masks:
            raise ValueError(f"Image {file_name!r} has no masks; pass its size=(height, width).")
        height, width = size if size is not None else next(iter(masks.values())).shape
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)})
        for name, mask in masks.items():
            if not np.any(mask):
                continue  # COCO has no empty annotations; the category stays listed
            annotation = mask_annotation(
                mask, annotation_id=len(self.annotations) + 1, image_id=image_id, category_id=self.category_ids[name]
            )
            if scores is not None and name in scores:
                annotation["score"] = float(scores[name])
            self.annotations.append(annotation)
        return image_id

    def document(self, **info: Any) -> dict[str, Any]:
        """The COCO document: `info` (free fields), images, categories and annotations."""
        return {
            "info": info,
            "images": self.images,
            "categories": [{"id": i, "name": name} for name, i in self.category_ids.items()],
            "annotations": self.annotations,
        }


def coco_document(
    file_name: str, masks: Mapping[str, np.ndarray], *, scores: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """A COCO document for one image: a category per object (in order), an annotation per non-empty mask."""
    names = list(masks)
    if not names:
        raise ValueError("No masks to write; name at least one object.")
    builder = CocoBuilder(names)
    builder.add_image(file_name, masks, scores=scores)
    document = builder.document()
    del document["info"]
    return document

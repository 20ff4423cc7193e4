"""A labelled set as the files segmentation code trains on: COCO JSON, Pascal-VOC-style index PNGs.

`export_set` writes, for every sample of a set folder (its masks: a labeler's, the grounding
model's or exact ones), under `out`:

    images/00000042.png                       the image, RGB
    coco/instances.json                       one annotation per named object (masks as COCO RLE)
    coco/semantic.json                        one annotation per class present in the index map
    voc/SegmentationClass/00000042.png        index map, palette PNG: 0 background, k class k, 255 ignore
    voc/ImageSets/Segmentation/all.txt        the image keys
    voc/classes.txt                           the class of each index, background first
    export.json                               counts per class and what was exported

Pixels that two masks of one image claim are 255 ("ignore", as VOC marks uncertain pixels) in the
index map and the semantic JSON; the instance JSON keeps both masks as they are. Every file is
written whole (atomically), so a stopped export is simply run again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from groundiff.data.coco import CocoBuilder
from groundiff.data.dataset import GroundingDataset
from groundiff.data.records import SampleRecord
from groundiff.files import write_json_atomic, write_text_atomic

IGNORE_INDEX = 255  # VOC's label for pixels no class owns with certainty
BACKGROUND = "background"
EXPORT_FORMATS = ("coco", "voc")
EXPORT_FILE = "export.json"


def semantic_index(masks: Mapping[str, np.ndarray], classes: Sequence[str]) -> np.ndarray:
    """One image's masks as an index map: (H, W) uint8, 0 background, k + 1 for `classes[k]`, 255 overlap.

    Args:
        masks: class name → (H, W) bool mask, every name in `classes`.
        classes: the dataset's classes, at most 254.
    Raises:
        ValueError: no masks, a name not in `classes`, or too many classes for a uint8 map.
    """
    if not masks:
        raise ValueError("semantic_index needs at least one mask; pass the image's masks by class name.")
    if len(classes) >= IGNORE_INDEX:
        raise ValueError(f"An index map holds at most {IGNORE_INDEX - 1} classes; got {len(classes)}.")
    position = {name: k + 1 for k, name in enumerate(classes)}
    shape = next(iter(masks.values())).shape
    index = np.zeros(shape, dtype=np.uint8)  # (H, W)
    claims = np.zeros(shape, dtype=np.int32)  # (H, W) how many masks claim each pixel
    for name, mask in masks.items():
        if name not in position:
            raise ValueError(f"Mask of {name!r} is not among the classes {list(classes)}; add it to the class list.")
        mask = np.asarray(mask, dtype=bool)
        index[mask] = position[name]
        claims += mask
    index[claims > 1] = IGNORE_INDEX
    return index


def masks_of_index(index: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """The inverse of `semantic_index` for the classes present: class name → (H, W) bool (overlaps dropped)."""
    return {name: index == k + 1 for k, name in enumerate(classes) if (index == k + 1).any()}


def voc_palette() -> list[int]:
    """Pascal VOC's 256-colour palette (flat RGB triples), as its devkit's `labelcolormap` builds it."""
    palette = []
    for label in range(256):
        red = green = blue = 0
        value = label
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette += [red, green, blue]
    return palette


def write_index_png(index: np.ndarray, path: Path) -> None:
    """An (H, W) uint8 index map as a palette PNG (VOC's `SegmentationClass` format)."""
    picture = Image.fromarray(index, mode="P")
    picture.putpalette(voc_palette())
    picture.save(path, format="PNG")


def read_index_png(path: Path) -> np.ndarray:
    """The (H, W) uint8 indices of a palette PNG (not its colours)."""
    with Image.open(path) as picture:
        return np.array(picture)


@dataclass
class ExportReport:
    """What `export_set` wrote: images, instances per class, files."""

    out: Path
    images: int = 0
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def export_set(
    source: Path | Callable[[], Iterable[SampleRecord]],
    out: Path,
    *,
    classes: Sequence[str] | None = None,
    formats: Sequence[str] = EXPORT_FORMATS,
    info: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> ExportReport:
    """Export labelled samples to `out` (see the module docstring for the layout).

    Args:
        source: a set folder whose samples carry one mask per class (generated, relabelled, truth), exported
            in the order of their sample indices, or a
            callable returning the `SampleRecord`s (read twice when `classes` is None).
        out: the dataset folder.
        classes: the dataset's classes in index order; default: every class of the samples, sorted.
        formats: any of `coco`, `voc`.
        info: free fields for the COCO `info` block and `export.json` (e.g. the label source).
    Raises:
        ValueError: an unknown format, or a sample without masks or with a class outside `classes`.
    """
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(f"Unknown export format {unknown[0] if unknown else ''!r}; choose from {EXPORT_FORMATS}.")
    info = dict(info or {})
    if isinstance(source, Path):
        info["source_set"] = str(source)
        dataset = GroundingDataset([source], features=False)  # by sample index, whichever worker wrote it

        def records() -> Iterable[SampleRecord]:
            return (dataset[position] for position in range(len(dataset)))
    else:
        records = source
    if classes is None:
        classes = sorted({name for record in records() for name in record.classes})
    classes = list(classes)
    if len(classes) >= IGNORE_INDEX:
        raise ValueError(f"VOC index maps hold at most {IGNORE_INDEX - 1} classes; got {len(classes)}.")
    writer = _Writer(out, classes, formats)
    with tqdm(desc=f"export {out.name}", unit="image", disable=not progress) as bar:
        for record in records():
            writer.add(record)
            bar.update(1)
    return writer.finish(info)


class _Writer:
    """Writes the per-image files as samples come and the dataset-wide files at the end."""

    def __init__(self, out: Path, classes: list[str], formats: Sequence[str]) -> None:
        self.out, self.classes, self.formats = out, classes, tuple(formats)
        self.instances, self.semantic = CocoBuilder(classes), CocoBuilder(classes)
        self.keys: list[str] = []
        self.counts = {name: Counter[str]() for name in classes}
        for sub in ("images", "coco", "voc/SegmentationClass", "voc/ImageSets/Segmentation"):
            (out / sub).mkdir(parents=True, exist_ok=True)

    def add(self, record: SampleRecord) -> None:
        if len(record.masks) != len(record.classes):
            raise ValueError(
                f"Sample {record.key} has {len(record.masks)} masks for {len(record.classes)} classes; export a "
                f"labelled set (`groundiff label`, `groundiff synthesize`), not one generated with --labeler none."
            )
        masks = dict(zip(record.classes, record.masks, strict=True))
        file_name = f"{record.key}.png"
        Image.fromarray(record.image).save(self.out / "images" / file_name)
        index = semantic_index(masks, self.classes)
        size = (int(index.shape[0]), int(index.shape[1]))
        self.instances.add_image(file_name, masks, size=size)
        self.semantic.add_image(file_name, masks_of_index(index, self.classes), size=size)
        if "voc" in self.formats:
            write_index_png(index, self.out / "voc" / "SegmentationClass" / file_name)
        self.keys.append(record.key)
        for name, mask in masks.items():
            self.counts[name].update(images=1, instances=int(mask.any()), pixels=int(mask.sum()))

    def finish(self, info: dict[str, Any]) -> ExportReport:
        report = ExportReport(self.out, len(self.keys), {n: dict(c) for n, c in self.counts.items()})
        if "coco" in self.formats:
            for name, builder in (("instances", self.instances), ("semantic", self.semantic)):
                report.files.append(self.out / "coco" / f"{name}.json")
                write_text_atomic(report.files[-1], json.dumps(builder.document(**info)))
        if "voc" in self.formats:
            report.files.append(self.out / "voc" / "classes.txt")
            write_text_atomic(report.files[-1], "\n".join([BACKGROUND, *self.classes]) + "\n")
            report.files.append(self.out / "voc" / "ImageSets" / "Segmentation" / "all.txt")
            write_text_atomic(report.files[-1], "".join(f"{key}\n" for key in self.keys))
        report.files.append(self.out / EXPORT_FILE)
        write_json_atomic(
            report.files[-1],
            {
                **info,
                "images": report.images,
                "classes": self.classes,
                "formats": list(self.formats),
                "ignore_index": IGNORE_INDEX,
                "per_class": report.per_class,
            },
        )
        return report

"""Labelers by name, as `--labeler` and config files name them."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from groundiff.labeling.base import Labeler

if TYPE_CHECKING:
    from groundiff.labeling.maskrcnn import MaskRCNNVersion


def _maskrcnn(version: MaskRCNNVersion) -> Callable[..., Labeler]:
    def load(**options: Any) -> Labeler:
        from groundiff.labeling.maskrcnn import MaskRCNNConfig, MaskRCNNLabeler

        return MaskRCNNLabeler(version=version, config=MaskRCNNConfig(**options))

    return load


def _miniworld(**options: Any) -> Labeler:
    from groundiff.miniworld.weights import load_miniworld_labeler

    return load_miniworld_labeler(**options)


LABELERS: dict[str, Callable[..., Labeler]] = {
    "maskrcnn": _maskrcnn("v2"),
    "maskrcnn-v1": _maskrcnn("v1"),
    "miniworld": _miniworld,
}


def load_labeler(name_or_path: str, **options: Any) -> Labeler:
    """The labeler registered as `name_or_path`, built with `options`.

    Names: `maskrcnn` (torchvision Mask R-CNN v2, COCO weights), `maskrcnn-v1` (the original
    torchvision Mask R-CNN); both take `MaskRCNNConfig` fields as options (e.g. `score_threshold=0.05,
    merge="top1"`). `miniworld` is the mini world's shipped labeler (options: `min_pixels`, `batch_size`).
    """
    if name_or_path not in LABELERS:
        close = difflib.get_close_matches(name_or_path, LABELERS, n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"Unknown labeler {name_or_path!r}. {hint}Known labelers: {', '.join(LABELERS)}.")
    return LABELERS[name_or_path](**options)

"""Labelers by name, as `--labeler` and config files name them."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from groundiff.labeling.base import Labeler
from groundiff.worlds import get_world, world_names

if TYPE_CHECKING:
    from groundiff.labeling.maskrcnn import MaskRCNNVersion


def _maskrcnn(version: MaskRCNNVersion) -> Callable[..., Labeler]:
    def load(**options: Any) -> Labeler:
        from groundiff.labeling.maskrcnn import MaskRCNNConfig, MaskRCNNLabeler

        return MaskRCNNLabeler(version=version, config=MaskRCNNConfig(**options))

    return load


LABELERS: dict[str, Callable[..., Labeler]] = {
    "maskrcnn": _maskrcnn("v2"),
    "maskrcnn-v1": _maskrcnn("v1"),
}


def load_labeler(name_or_path: str, **options: Any) -> Labeler:
    """The labeler registered as `name_or_path`, built with `options`.

    Names: `maskrcnn` (torchvision Mask R-CNN v2, COCO weights), `maskrcnn-v1` (the original
    torchvision Mask R-CNN); both take `MaskRCNNConfig` fields as options (e.g. `score_threshold=0.05,
    merge="top1"`). A world's name is its own labeler (the mini world's takes `min_pixels`, `batch_size`).
    """
    world = get_world(name_or_path)
    if world is not None:
        return world.labeler(**options)
    if name_or_path not in LABELERS:
        known = [*LABELERS, *world_names()]
        close = difflib.get_close_matches(name_or_path, known, n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"Unknown labeler {name_or_path!r}. {hint}Known labelers: {', '.join(known)}.")
    return LABELERS[name_or_path](**options)

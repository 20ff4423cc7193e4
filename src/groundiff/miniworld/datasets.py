"""Rendered training and evaluation sets, cached on disk as .npz so that each part renders them once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from groundiff.miniworld.renderer import RenderedSet, render_set

log = logging.getLogger(__name__)

TRAIN_FIRST_SEED = 0
EVAL_FIRST_SEED = 10_000_000  # held-out scenes: no seed overlaps the training range


def cached_render_set(
    cache_dir: Path, first_seed: int, count: int, *, num_objects: int = 2, style: str = "plain"
) -> RenderedSet:
    """`render_set(first_seed, count)` over all 20 classes, loaded from `cache_dir` when rendered before."""
    suffix = "" if style == "plain" else f"_{style}"  # plain sets keep the file names they were cached under
    path = Path(cache_dir) / f"render_{first_seed}_{count}_{num_objects}{suffix}.npz"
    if path.exists():
        data = np.load(path)
        return RenderedSet(images=data["images"], labels=data["labels"], classes=data["classes"])
    log.info("rendering %d scenes from seed %d into %s", count, first_seed, path)
    rendered = render_set(first_seed, count, num_objects=num_objects, style=style)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=rendered.images, labels=rendered.labels, classes=rendered.classes)
    tmp.rename(path)
    return rendered

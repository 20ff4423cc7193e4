"""Quality scores of a set (CLIP-IQA, written by `generation.annotate.score_set`) and the top-quality
selection the paper's "top 80 %" rows train and test on."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from groundiff.data.shards import iter_metadata

SCORES_FILE = "scores.json"


def read_scores(folder: Path) -> dict[int, float]:
    """Quality scores of a set: the side file if present, else the scores stored with each sample."""
    side = folder / SCORES_FILE
    if side.exists():
        return {int(k): float(v) for k, v in json.loads(side.read_text())["scores"].items()}
    return {m["index"]: m["iqa"] for m in iter_metadata(folder) if m.get("iqa") is not None}


def top_fraction(scores: Sequence[float] | np.ndarray, fraction: float = 0.8) -> np.ndarray:
    """Indices (ascending, int64) of the best `floor(fraction × N)` of N scores, higher is better.

    Ties are broken by index (the earlier sample is kept), so the selection is deterministic.
    `fraction` is in (0, 1]; NaN scores are an error (score every sample first).
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"Expected a 1-D array of scores, got shape {values.shape}.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} is outside (0, 1]; pass e.g. 0.8 to keep the best 80%.")
    if np.isnan(values).any():
        raise ValueError(
            f"{int(np.isnan(values).sum())} scores are NaN (samples without a score); score them or drop them first."
        )
    count = math.floor(fraction * len(values) + 1e-9)
    order = np.lexsort((np.arange(len(values)), -values))  # by score descending, then index ascending
    return np.sort(order[:count]).astype(np.int64)

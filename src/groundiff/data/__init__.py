"""The on-disk grounding sets: vocabularies and splits, sample records, shards, manifests, scores, datasets.

Names are imported on first use, so that `groundiff --help` and config parsing stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SET_KINDS": "vocabulary",
    "VOC_SPLIT1": "vocabulary",
    "ClassSplit": "vocabulary",
    "load_split": "vocabulary",
    "GroundingDataset": "dataset",
    "SampleRecord": "records",
    "ShardError": "shards",
    "iter_records": "shards",
    "read_scores": "scores",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'groundiff.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"groundiff.data.{_EXPORTS[name]}"), name)

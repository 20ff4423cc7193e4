"""The on-disk grounding sets: vocabularies and splits, sample records, shards, manifests, scores, datasets.

Names are imported on first use, so that `groundiff --help` and config parsing stay fast.
"""

from __future__ import annotations

from groundiff import lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS)

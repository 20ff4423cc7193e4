"""`GroundingDataset`: random access to the samples of one or more set folders, for PyTorch training.

Shards are indexed once (byte offsets of each file); `__getitem__` then reads exactly one sample's
bytes with a seek, so DataLoader workers, shuffling and distributed samplers work as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from groundiff.data.records import SampleRecord
from groundiff.data.scores import read_scores, top_fraction
from groundiff.data.shards import SampleLocation, index_shard, list_shards, read_record


class GroundingDataset(Dataset[SampleRecord]):
    """The samples of `folders`, optionally only the best `top_quality` fraction of each by IQA score.

    Args:
        folders: set folders written by `generate_set`.
        features: False skips the U-Net maps (e.g. for evaluating masks only).
        top_quality: keep this fraction of each set by stored quality score (0.8 = the paper's top 80%).
    """

    def __init__(self, folders: Sequence[Path | str], *, features: bool = True, top_quality: float | None = None):
        self.features = features
        self.locations: list[SampleLocation] = []
        for folder in map(Path, folders):
            shards = list_shards(folder)
            if not shards:
                raise FileNotFoundError(
                    f"{str(folder)!r} holds no shards; is it a set folder from `groundiff generate`?"
                )
            locations = sorted((loc for shard in shards for loc in index_shard(shard)), key=lambda loc: loc.index)
            if top_quality is not None:
                locations = _best_scored(locations, read_scores(folder), top_quality, folder)
            self.locations += locations

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, position: int) -> SampleRecord:
        return read_record(self.locations[position], features=self.features)

    def images(self) -> np.ndarray:
        """All images (N, H, W, 3) uint8, for quick looks and scoring."""
        return np.stack([self[i].image for i in range(len(self))])


def _best_scored(
    locations: list[SampleLocation], scores: dict[int, float], fraction: float, folder: Path
) -> list[SampleLocation]:
    unscored = [loc.index for loc in locations if loc.index not in scores]
    if unscored:
        raise ValueError(
            f"{len(unscored)} samples of {str(folder)!r} have no quality score (e.g. {unscored[0]}); "
            f"run `groundiff score --data {folder}` first, or drop --top-quality."
        )
    keep = top_fraction([scores[loc.index] for loc in locations], fraction)
    return [locations[i] for i in keep]

"""Opening a generated set for training or evaluation: check it is complete and of the right kind, and
serve records whose U-Net maps are ready (stored, or recomputed by the generating U-Net)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from groundiff.capture.replay import stored_maps
from groundiff.data.dataset import GroundingDataset
from groundiff.data.manifest import check_complete, read_set_config
from groundiff.data.records import SampleRecord
from groundiff.sd.pipelines import load_pipeline


class MapsDataset(Dataset[SampleRecord]):
    """Records with their maps, recomputed by the generating U-Net when a set stores U-Net inputs."""

    def __init__(self, records: Dataset[SampleRecord], size: int, unet: Any | None) -> None:
        self.records, self.size, self.unet = records, size, unet

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, position: int) -> SampleRecord:
        record = self.records[position]
        timesteps = {int(k): v for k, v in record.meta.get("feature_timesteps", {}).items()}
        record.features = stored_maps(record.features, timesteps, self.unet)  # `collate` casts to float32
        return record


def set_model_name(folder: str) -> str:
    """The diffusion model that generated a set (its text encoder is the grounding model's)."""
    return str(read_set_config(Path(folder))["model"])


def check_training_set(folder: str, kind: str) -> None:
    """Refuse a set that is not complete and intact (see `check_complete`) or not of `kind`.

    Raises:
        ShardError: the set is incomplete (no manifest) or its shards differ from the manifest.
        ValueError: the set is of another kind (`--train` takes a train set, `--val` a val set).
    """
    found = check_complete(Path(folder))["config"].get("set")
    if found != kind:
        raise ValueError(
            f"--{kind} {folder!r} is a {found!r} set; pass a {kind!r} set (`groundiff generate --set {kind}`): "
            f"training or choosing the best epoch on another kind leaks the sets meant for measuring into the model."
        )


def open_set(folder: str, limit: int | None = None, *, top_quality: float | None = None) -> MapsDataset:
    """A set with ready maps: stored ones, or recomputed when the set stores U-Net inputs."""
    records = GroundingDataset([folder], top_quality=top_quality)
    first = records[0]
    unet = None
    if not any(".input." not in k for k in first.features):
        unet = load_pipeline(set_model_name(folder), device="cpu").unet
    return MapsDataset(records, min(limit or len(records), len(records)), unet)

"""Work on a set that already exists: relabel it with another labeler, or score its image quality.

Both read the stored images, so a better labeler or scorer never needs the set to be regenerated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from groundiff.data.manifest import CONFIG_FILE, MANIFEST_FILE, collect_done, read_set_config, write_manifest
from groundiff.data.records import SampleRecord
from groundiff.data.scores import SCORES_FILE
from groundiff.data.shards import TEMP_SUFFIX, ShardWriter, iter_metadata, iter_records
from groundiff.files import write_json_atomic
from groundiff.labeling.base import Labeler, LabelResult


@runtime_checkable
class RecordLabeler(Protocol):
    """Anything that labels stored samples from all they hold (image and U-Net features), such as the
    grounding model: `label_records` returns one `LabelResult` per record, a class left out of its
    masks counting as not found."""

    def label_records(self, records: Sequence[SampleRecord]) -> list[LabelResult]: ...


@dataclass
class LabelReport:
    """What `label_set` did: samples kept (every class found) and dropped by the discard rule."""

    folder: Path
    kept: int = 0
    dropped: int = 0
    already_done: int = 0


def _batches(records: Iterator[SampleRecord], size: int) -> Iterator[list[SampleRecord]]:
    batch: list[SampleRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def label_set(
    source: Path,
    out: Path,
    labeler: Labeler | RecordLabeler,
    labeler_name: str,
    *,
    batch_size: int = 8,
    samples_per_shard: int = 100,
    progress: bool = True,
) -> LabelReport:
    """Copy the set `source` to `out` with masks from `labeler`, dropping samples it does not fully find.

    `labeler` reads the images (a `Labeler`) or whole records (a `RecordLabeler`). Resumable like
    generation: samples already in `out` are skipped.
    """
    if not (source / MANIFEST_FILE).exists():
        raise FileNotFoundError(f"{str(source)!r} is no complete set (no {MANIFEST_FILE}); generate it first.")
    if source.resolve() == out.resolve():
        raise ValueError(f"Relabeling writes a new set: choose an --out folder other than {str(source)!r}.")
    config = read_set_config(source)
    config.update(labeler=labeler_name, relabeled_from=str(source))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, config)
    report = LabelReport(out)
    for stale in out.glob(f"*{TEMP_SUFFIX}"):
        stale.unlink()
    done, next_number = collect_done(out)
    report.already_done = len(done)
    todo = (r for r in iter_records(source) if r.index not in done)
    writer = ShardWriter(out, "relabel", samples_per_shard, next_number.get("relabel", 0))
    with writer, tqdm(desc=f"label {out.name}", unit="sample", disable=not progress) as bar:
        for batch in _batches(todo, batch_size):
            if isinstance(labeler, RecordLabeler):
                results = labeler.label_records(batch)
            else:
                results = labeler.label(np.stack([r.image for r in batch]), [r.classes for r in batch])
            for record, result in zip(batch, results, strict=True):
                bar.update(1)
                if result.missing(record.classes):
                    report.dropped += 1
                    continue
                record.masks = [result.masks[c] for c in record.classes]
                record.meta.update(labeler=labeler_name, label_scores=[result.scores[c] for c in record.classes])
                writer.write(record)
                report.kept += 1
    write_manifest(out, config, tuple(sorted({c for meta in iter_metadata(out) for c in meta["classes"]})))
    return report


def score_set(folder: Path, scorer: Any, *, batch_size: int = 32, progress: bool = True) -> dict[int, float]:
    """CLIP-IQA score of every image of a set, written to `scores.json` beside its shards.

    Returns:
        sample index → score in [0, 1].
    """
    scores: dict[int, float] = {}
    records = iter_records(folder, features=False)
    with tqdm(desc=f"score {folder.name}", unit="image", disable=not progress) as bar:
        for batch in _batches(records, batch_size):
            values = scorer.score(np.stack([r.image for r in batch]))
            scores.update({r.index: float(v) for r, v in zip(batch, values, strict=True)})
            bar.update(len(batch))
    write_json_atomic(folder / SCORES_FILE, {"scorer": getattr(scorer, "name", "unknown"), "scores": scores})
    return scores

"""`generate_set`: write one named set of (image, U-Net features, masks, classes) samples to shards.

Sample *i* of a set is fixed by the config alone (see `sampling`): workers split the indices by
rank (`i % workers == worker`), each writes its own shards, and any run finds the samples already
on disk and generates only the missing ones. The manifest is written once every index is done; a
manifest whose shards are no longer all on disk is dropped and the missing samples generated again.
One process at a time writes a worker's shards (a lock file per worker, released by the kernel when
its process ends, also on SIGKILL).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from groundiff.capture import GenerationSettings, generate_with_features
from groundiff.capture.attention import class_heat_maps
from groundiff.data.manifest import CONFIG_FILE, MANIFEST_FILE, check_complete, collect_done, write_manifest
from groundiff.data.records import SampleRecord
from groundiff.data.shards import TEMP_SUFFIX, BackgroundWriter, ShardError, ShardWriter
from groundiff.data.vocabulary import ClassSplit, load_split
from groundiff.files import FolderBusyError, hold_lock, is_locked
from groundiff.generation.config import GenerateConfig
from groundiff.generation.sampling import ClassPools, attempt_seed, class_pools, draw_classes, draw_count
from groundiff.labeling.base import Labeler, LabelResult
from groundiff.sd.dtypes import parse_dtype
from groundiff.sd.pipelines import load_pipeline
from groundiff.text import PromptTemplate

log = logging.getLogger(__name__)


@dataclass
class GenerateReport:
    """What one `generate_set` call did."""

    folder: Path
    generated: int = 0
    discarded: int = 0
    already_done: int = 0
    complete: bool = False
    messages: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    index: int
    attempt: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


def generate_set(
    config: GenerateConfig,
    *,
    worker: int = 0,
    workers: int = 1,
    pipe: Any | None = None,
    labeler: Labeler | None = None,
    scorer: Any | None = None,
) -> GenerateReport:
    """Generate (or resume) the set `config.out` with this worker's share of the sample indices.

    Args:
        config: the set's definition.
        worker, workers: this process's rank and the number of processes sharing the set.
        pipe, labeler, scorer: already-loaded components; by default loaded from the config's names.
    Returns:
        A report; `complete` is True once every sample of the set is on disk and the manifest written.
    Raises:
        ValueError: bad worker numbers, classes or `out` (a file, or a set of another config).
        FolderBusyError: another live process writes this worker's share, or the set with another worker count.
        OSError: the disk is full (the message says what was kept); no shard is ever left half-written.
    """
    # 1. Check inputs before touching the disk.
    if workers < 1 or not 0 <= worker < workers:
        raise ValueError(f"Worker {worker} of {workers} does not exist; use workers >= 1 and 0 <= worker < workers.")
    split = load_split(config.vocabulary)
    pools = class_pools(split, config.set, config.classes, config.max_objects_per_prompt or config.objects_per_prompt)
    folder = Path(config.out)
    check_folder(folder, config.content())

    # 2. Own this worker's share of the folder: a second process on it is refused, never interleaved.
    prefix = f"{config.set}-w{worker:03d}of{workers:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    with hold_lock(folder / f"{prefix}.lock", f"worker {worker} of {workers} of set {str(folder)!r}"):
        _refuse_other_worker_counts(folder, config.set, workers)
        share = range(worker, config.num_samples or 0, workers)
        return _generate_share(config, folder, prefix, share, pools, split, pipe=pipe, labeler=labeler, scorer=scorer)


def _generate_share(
    config: GenerateConfig,
    folder: Path,
    prefix: str,
    share: range,
    pools: ClassPools,
    split: ClassSplit,
    *,
    pipe: Any | None,
    labeler: Labeler | None,
    scorer: Any | None,
) -> GenerateReport:
    """Steps 3-5 of `generate_set`, while holding the lock of this worker's shards."""
    report = GenerateReport(folder)
    if _verified_complete(folder):
        report.complete = True
        report.messages.append(
            f"Set {str(folder)!r} is already complete ({config.num_samples} samples); nothing to do."
        )
        return report
    done, shard_counts = collect_done(folder)
    for stale in folder.glob(f"{prefix}-*{TEMP_SUFFIX}"):
        stale.unlink()  # a shard a killed run left half-written; its samples are regenerated
    todo = [i for i in share if i not in done]
    report.already_done = len(share) - len(todo)

    # 3. Load the components only when there is work; the folder is claimed once they load, so a
    # typo in a model name leaves nothing that blocks the corrected run.
    if todo:
        pipe = pipe or load_pipeline(config.model, dtype=config.dtype, device=config.device)
        if labeler is None and config.labeler != "none":
            labeler = _load_labeler(config.labeler)
        if scorer is None and config.scorer != "none":
            scorer = _load_scorer(config.scorer)
    claim_folder(folder, config.content())

    # 4. Generate this worker's missing samples.
    if todo:
        writer = ShardWriter(folder, prefix, config.samples_per_shard, shard_counts.get(prefix, 0))
        try:
            _SetGenerator(config, pools, pipe, labeler, scorer).run(todo, writer, report)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise OSError(
                error.errno,
                f"No space left for set {str(folder)!r} ({error.strerror}). Free space or choose another --out; "
                f"the {len(writer.published)} shards finished in this run are kept and a rerun continues after them",
            ) from error

    # 5. The last worker to finish writes the manifest of the whole set.
    done, _ = collect_done(folder)
    if len(done) == config.num_samples:
        write_manifest(folder, config.content(), split.classes)
        report.complete = True
    return report


def _verified_complete(folder: Path) -> bool:
    """Whether the set has a manifest whose shards are all on disk; a stale manifest is removed, so
    that a shard deleted after an error (as the error says) is generated again."""
    if not (folder / MANIFEST_FILE).exists():
        return False
    try:
        check_complete(folder)
    except ShardError as error:
        log.warning("%s (The stale %s is dropped.)", error, MANIFEST_FILE)
        (folder / MANIFEST_FILE).unlink()
        return False
    return True


def _refuse_other_worker_counts(folder: Path, kind: str, workers: int) -> None:
    """Refuse to run while a run with another number of workers writes the folder: both would
    generate the same sample indices."""
    ours = {f"{kind}-w{rank:03d}of{workers:03d}.lock" for rank in range(workers)}
    for lock in sorted(folder.glob("*.lock")):
        if lock.name not in ours and is_locked(lock):
            raise FolderBusyError(
                f"Another process writes set {str(folder)!r} with another number of workers ({lock.stem}); "
                f"run every worker of one set with the same --workers, or wait for it to finish."
            )


class _SetGenerator:
    """The generation loop of one worker: batches of pending samples, label, keep or retry, score, write."""

    def __init__(self, config: GenerateConfig, pools: ClassPools, pipe: Any, labeler: Labeler | None, scorer: Any):
        self.config = config
        self.pools = pools
        self.template = PromptTemplate(config.template)
        self.pipe, self.labeler, self.scorer = pipe, labeler, scorer
        # `GenerateConfig.__post_init__` fills unset settings with the world's.
        assert config.steps is not None and config.guidance_scale is not None
        self.settings = GenerationSettings(
            num_inference_steps=config.steps,
            guidance_scale=config.guidance_scale,
            height=config.height,
            width=config.width,
        )

    def run(self, todo: list[int], writer: ShardWriter, report: GenerateReport) -> None:
        config = self.config
        queue = [_Pending(i) for i in todo]
        bar = tqdm(total=len(todo), desc=f"{config.set} {writer.prefix}", unit="sample", disable=not config.progress)
        with writer, BackgroundWriter(writer) as background, bar:
            while queue:
                batch, queue = queue[: config.batch_size], queue[config.batch_size :]
                records, retry = self.attempt(batch)
                for record in records:
                    background.write(record)
                    report.generated += 1
                    bar.update(1)
                report.discarded += len(retry)
                queue += retry
                bar.set_postfix(kept=report.generated, discarded=report.discarded)

    def attempt(self, batch: list[_Pending]) -> tuple[list[SampleRecord], list[_Pending]]:
        """One attempt at each pending sample: the kept records, and the discarded samples to retry
        (each with a failure entry and its next attempt number)."""
        config = self.config
        seeds = [attempt_seed(config.seed, config.set, p.index, p.attempt) for p in batch]
        counts = [draw_count(config.objects_per_prompt, config.max_objects_per_prompt, seed) for seed in seeds]
        classes = [draw_classes(self.pools, count, seed) for count, seed in zip(counts, seeds, strict=True)]
        prompts = [self.template.format(c)[0] for c in classes]
        output = generate_with_features(
            self.pipe, prompts, seeds, settings=self.settings, capture=config.capture(), attention=config.attention_maps
        )
        labels = self.labeler.label(output.images, classes) if self.labeler else [LabelResult()] * len(batch)
        missing = [label.missing(names) if self.labeler else [] for label, names in zip(labels, classes, strict=True)]
        kept = [j for j in range(len(batch)) if not missing[j]]
        scores = self.score(output.images[kept])
        features = output.features.to("cpu", parse_dtype(config.feature_dtype))
        records, retry = [], []
        for j, pending in enumerate(batch):
            if missing[j]:
                self.discard(pending, list(classes[j]), missing[j])
                retry.append(pending)
                continue
            meta = {
                "prompt": prompts[j],
                "classes": list(classes[j]),
                "index": pending.index,
                "attempt": pending.attempt,
                "seed": seeds[j],
                "set": config.set,
                "model": config.model,
                "steps": config.steps,
                "guidance_scale": config.guidance_scale,
                "feature_timesteps": {str(k): v for k, v in features.timesteps.items()},
                "labeler": config.labeler,
                "label_scores": [labels[j].scores.get(c) for c in classes[j]],
                "scorer": config.scorer,
                "iqa": scores[kept.index(j)],
                "discarded_attempts": pending.failures,
            }
            masks = [labels[j].masks[c] for c in classes[j]] if self.labeler else []
            stored = features.flat(
                j, maps=config.feature_storage != "unet-input", inputs=config.feature_storage != "maps"
            )
            heat = None
            if output.attention is not None:
                heat = class_heat_maps(output.attention[j], self.pipe.tokenizer, prompts[j], list(classes[j])).half()
            records.append(SampleRecord(pending.index, output.images[j], stored, masks, meta, heat))
        return records, retry

    def discard(self, pending: _Pending, classes: list[str], missing: list[str]) -> None:
        pending.failures.append({"attempt": pending.attempt, "classes": classes, "missing": missing})
        pending.attempt += 1
        if pending.attempt >= self.config.max_attempts:
            tried = [f["classes"] for f in pending.failures]
            raise RuntimeError(
                f"Sample {pending.index} was discarded {self.config.max_attempts} times: labeler "
                f"{self.config.labeler!r} did not find every class of {tried}. Check the labeler and its "
                f"threshold, or raise max_attempts."
            )

    def score(self, images: np.ndarray) -> list[float | None]:
        if self.scorer is None:
            return [None] * len(images)
        return [float(s) for s in self.scorer.score(images)] if len(images) else []


def _load_labeler(name: str) -> Labeler:
    from groundiff.labeling.registry import load_labeler

    return load_labeler(name)


def _load_scorer(name: str) -> Any:
    from groundiff.scoring import load_scorer

    return load_scorer(name)


def check_folder(folder: Path, content: dict[str, Any]) -> None:
    """Check that `folder` can hold the set of config `content`: not a file, and an existing set has that config.

    Raises:
        ValueError: naming the problem and, for a changed config, every changed field.
    """
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {str(folder)!r} is a file, not a folder; pass a folder path for the set.")
    path = folder / CONFIG_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        changed = sorted(k for k in set(stored) | set(content) if stored.get(k) != content.get(k))
        if changed:
            details = "; ".join(f"{k}: set has {stored.get(k)!r}, now {content.get(k)!r}" for k in changed)
            raise ValueError(
                f"Set {str(folder)!r} was started with a different config ({details}). "
                f"Use the original config to resume it, or another --out folder for a new set."
            )


def claim_folder(folder: Path, content: dict[str, Any]) -> None:
    """Write the set's `config.json` unless it exists; of two processes claiming at once, one writes and
    the other checks (a hard link never replaces an existing file)."""
    path = folder / CONFIG_FILE
    temp = path.with_name(f"{CONFIG_FILE}.tmp{os.getpid()}")
    try:
        if not path.exists():
            temp.write_text(json.dumps(content, indent=2, sort_keys=True))
            os.link(temp, path)
    except FileExistsError:
        pass  # another process claimed it first
    finally:
        temp.unlink(missing_ok=True)
    check_folder(folder, content)


def prepare_folder(folder: Path, content: dict[str, Any]) -> None:
    """Create the set folder with its config `content`, or check that an existing one has the same content."""
    check_folder(folder, content)
    folder.mkdir(parents=True, exist_ok=True)
    claim_folder(folder, content)


def worker_from_environment(worker: int | None, workers: int | None) -> tuple[int, int]:
    """Rank and world size from flags, else torchrun/accelerate (RANK, WORLD_SIZE), else a Slurm array."""
    if worker is not None or workers is not None:
        return (0 if worker is None else worker), (1 if workers is None else workers)
    env = os.environ
    if "WORLD_SIZE" in env:
        return int(env.get("RANK", 0)), int(env["WORLD_SIZE"])
    if "SLURM_ARRAY_TASK_COUNT" in env:
        minimum = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return int(env["SLURM_ARRAY_TASK_ID"]) - minimum, int(env["SLURM_ARRAY_TASK_COUNT"])
    return 0, 1

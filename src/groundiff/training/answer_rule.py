"""Choose a trained model's answer rule (`model.answers`: the presence threshold and the share of its
mask an object must keep against the others, or an answer score) on a validation set, and record it in
the checkpoint, so that `ground`, the Python API and evaluation answer "not found" as tuned.

`train` does this for every model trained with negative queries; `groundiff tune-answers` does it for
any checkpoint, on any validation set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from groundiff.data import GroundingDataset
from groundiff.data.batching import ClassEmbedder
from groundiff.data.records import SampleRecord
from groundiff.data.sets import open_set
from groundiff.evaluation.absent import set_classes, tune_answer_rule
from groundiff.evaluation.config import MIN_T_ACC
from groundiff.model import GroundingModel
from groundiff.model.answers import answer_rule
from groundiff.model.checkpoint import CheckpointMeta, load_grounding_model, save_checkpoint
from groundiff.sd.pipelines import load_text_components


def tune_checkpoint_answers(
    folder: Path, val: str | None = None, *, min_t_acc: float = MIN_T_ACC, rule: str = "grid", batch_size: int = 4
) -> dict[str, Any]:
    """Tune the answer rule of the checkpoint in `folder` on `val` (default: its training run's
    validation set) and write it into the checkpoint; returns `tune_answer_rule`'s choice.

    Raises:
        ValueError: no validation set given and none recorded in the checkpoint.
    """
    model, meta = load_grounding_model(folder)
    source = val or meta.train_config.get("val")
    if not source:
        raise ValueError(f"Checkpoint {str(folder)!r} records no validation set; name one with --val.")
    embedder = ClassEmbedder.for_checkpoint(meta, *load_text_components(meta.text_model))
    return record_answer_rule(
        folder, model, meta, open_set(source), embedder, source, min_t_acc=min_t_acc, rule=rule, batch_size=batch_size
    )


def record_answer_rule(
    folder: Path,
    model: GroundingModel,
    meta: CheckpointMeta,
    dataset: Dataset[SampleRecord],
    embedder: ClassEmbedder,
    source: str,
    *,
    min_t_acc: float = MIN_T_ACC,
    rule: str = "grid",
    batch_size: int = 4,
) -> dict[str, Any]:
    """Tune `model`'s answer rule on `dataset` (the set in folder `source`; absent queries drawn from its
    classes), set it on the model and rewrite the checkpoint in `folder` with it; the weights are
    unchanged and the choice is kept in the checkpoint's `val["answer_rule"]`."""
    pool = set_classes(GroundingDataset([Path(source)], features=False))
    choice = tune_answer_rule(model, dataset, embedder, pool, min_t_acc=min_t_acc, rule=rule, batch_size=batch_size)
    model.config = dataclasses.replace(model.config, **answer_rule(choice))
    tuned = dataclasses.replace(
        meta, model_config=model.config.to_dict(), val={**meta.val, "answer_rule": {**choice, "set": source}}
    )
    save_checkpoint(folder, model, tuned)
    return choice

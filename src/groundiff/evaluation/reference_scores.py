"""Floors, ceilings and training-free references, scored on a test set beside the grounding model.

Every row is scored against the same target masks as the model (the labeler's masks on generated
sets, the exact masks on truth sets) with the same category-wise mIoU and bootstrap interval:

- `predict_everything`: every pixel for every class (the floor any model must clear);
- `oracle`: the target masks at the model's native output resolution (its finest feature map),
  bilinearly upsampled as the model's logits are (the ceiling of that resolution);
- `cross_attention` / `cross_attention_argmax`: DAAM's heat maps (bicubic, min-max) cut at a
  threshold chosen on a validation set (`tune_attention_thresholds`), alone or with a per-pixel
  argmax over the prompt's classes;
- `colour_threshold` (mini world only): hue and saturation near the class's colour word, a baseline
  that knows the world's colours, which no real world offers; `colour_threshold_two_colours` scores
  it on the images whose classes differ in colour, where it equals the exact masks on renders: on
  generated sets it is then the best available measure of the labeler's accuracy (no exact masks
  exist for generated images);
- `labeler` (truth sets only): the labeler that made the training masks, against the exact masks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from groundiff.data.records import SampleRecord
from groundiff.evaluation.metrics import IoUAccumulator
from groundiff.evaluation.references import (
    REFERENCE_RULES,
    THRESHOLD_GRID,
    expand_heat,
    oracle_masks,
    predict_everything,
    tune_threshold,
)

# DAAM's threshold, used when no validation set with attention maps is given.
DAAM_THRESHOLD = 0.4
ATTENTION_ROWS = {"cross_attention": "threshold", "cross_attention_argmax": "argmax"}

MaskRule = Callable[[SampleRecord, torch.Tensor], torch.Tensor]


def records(dataset: Dataset[SampleRecord]) -> Iterable[SampleRecord]:
    for position in range(len(dataset)):  # type: ignore[arg-type]
        yield dataset[position]


def exact_targets(record: SampleRecord) -> torch.Tensor:
    """(N, H, W) bool target masks of a record."""
    return torch.from_numpy(np.stack(record.masks))


def attention_scores(record: SampleRecord) -> torch.Tensor:
    """(N, H, W) float DAAM scores of a record's stored heat, at its mask size.

    Raises:
        ValueError: the set was generated without attention maps.
    """
    if record.attention is None:
        raise ValueError(
            f"Sample {record.index} has no cross-attention maps; generate the set with --attention-maps true."
        )
    return expand_heat(record.attention.float(), tuple(record.masks[0].shape))  # type: ignore[arg-type]


def tune_attention_thresholds(val: Dataset[SampleRecord]) -> dict[str, dict[str, Any]]:
    """Per cross-attention rule, the threshold with the best category-wise mIoU on the validation set
    `val` (never a test set), with the mIoU of every threshold tried."""
    scored = [(attention_scores(r), exact_targets(r), r.classes) for r in records(val)]
    tuned = {}
    for row, rule in ATTENTION_ROWS.items():
        threshold, grid = tune_threshold(scored, REFERENCE_RULES[rule], THRESHOLD_GRID)
        tuned[row] = {"threshold": threshold, "val_miou": {f"{t:.2f}": 100 * m for t, m in grid.items()}}
    return tuned


def score_rule(
    dataset: Dataset[SampleRecord], rule: MaskRule, keep: Callable[[SampleRecord], bool] | None = None
) -> dict[str, Any]:
    """Category-wise mIoU (percent, with interval) of the masks `rule(record, target)` on the records of
    `dataset` that `keep` accepts (all by default)."""
    from groundiff.evaluation.evaluate import summarize

    accumulator = IoUAccumulator()
    for record in records(dataset):
        if keep is not None and not keep(record):
            continue
        target = exact_targets(record)
        accumulator.update(rule(record, target), target, record.classes)
    return summarize(accumulator)


def score_attention_rows(
    dataset: Dataset[SampleRecord], attention: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The cross-attention rows: per row of `attention` (`{"threshold", ...}`), its masks scored on `dataset`."""
    rows = {}
    for row, setting in attention.items():
        rows[row] = {
            **score_rule(dataset, _attention_rule(ATTENTION_ROWS[row], float(setting["threshold"]))),
            **setting,
        }
    return rows


def _attention_rule(name: str, threshold: float) -> MaskRule:
    rule = REFERENCE_RULES[name]

    def masks(record: SampleRecord, target: torch.Tensor) -> torch.Tensor:
        return rule(attention_scores(record), threshold)

    return masks


def score_references(
    dataset: Dataset[SampleRecord],
    *,
    native_side: int,
    attention: dict[str, dict[str, Any]] | None = None,
    colour_rule: MaskRule | None = None,
    two_colours: Callable[[SampleRecord], bool] | None = None,
    labeler_rule: MaskRule | None = None,
) -> dict[str, dict[str, Any]]:
    """Every reference row that applies to `dataset` (records without features).

    Args:
        native_side: side of the model's finest feature map (its output before upsampling).
        attention: per cross-attention row, `{"threshold", "tuned_on"}`; None skips those rows.
        colour_rule, labeler_rule: the world's colour baseline and labeler, when it has them.
        two_colours: which records name classes of different colours (for the colour baseline).
    """
    rows: dict[str, dict[str, Any]] = {
        "predict_everything": score_rule(dataset, lambda _, target: predict_everything(target)),
        "oracle": {**score_rule(dataset, lambda _, t: oracle_masks(t, native_side)), "side": native_side},
    }
    rows.update(score_attention_rows(dataset, attention or {}))
    if colour_rule is not None:
        rows["colour_threshold"] = score_rule(dataset, colour_rule)
        if two_colours is not None:
            rows["colour_threshold_two_colours"] = score_rule(dataset, colour_rule, two_colours)
    if labeler_rule is not None:
        rows["labeler"] = score_rule(dataset, labeler_rule)
    return rows

"""The pictures of docs/RESULTS.md's "beyond the paper" sections, from truth-set renders and their stored maps.

    OMP_NUM_THREADS=1 python scripts/draw_queries.py --bench <bench> --objects <folder of truth-*-n3/n4 sets> \\
        --negatives <checkpoint> --subtract <checkpoint>

1. docs/absent_objects.png: a render asked for its two objects and one it does not contain, answered by
   the shipped checkpoint (no presence output: it paints a mask) and by the model trained with negatives.
2. docs/overlap.png: a render whose objects share a word, grounded without and with subtraction.
3. docs/object_counts.png: renders of 1, 3 and 4 objects grounded by the shipped checkpoint.
4. with --tuned: docs/absent_rule.png, renders asked also for an absent class that shares a word with one
   of their objects, answered by the tuned checkpoint under the default rule and under its tuned one
   (the first two test renders where the tuned rule turns the absent class away, and the first where
   it turns away a present object).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from groundiff.data.batching import ClassEmbedder, collate, shares_word
from groundiff.data.records import SampleRecord
from groundiff.data.sets import open_set
from groundiff.evaluation.evaluate import predict
from groundiff.evaluation.overlap import shares_a_word
from groundiff.miniworld.vocabulary import SEEN_CLASSES
from groundiff.miniworld.weights import GROUNDING_DIR
from groundiff.model.answers import answer_rule
from groundiff.model.checkpoint import load_grounding_model
from groundiff.sd.pipelines import load_text_components
from groundiff.visualize import legend_handles, overlay, plt, save_figure

REPOSITORY = Path(__file__).resolve().parents[1]


class Grounder:
    """A checkpoint with its class embedder, answering queries about one stored record."""

    def __init__(self, checkpoint: Path, *, default_rule: bool = False) -> None:
        self.model, meta = load_grounding_model(checkpoint)
        if default_rule:  # the answer rule before tuning: presence probability 0.5, no contest
            defaults = answer_rule(type(self.model.config)())
            self.model.config = dataclasses.replace(self.model.config, **defaults)
        self.embedder = ClassEmbedder.for_checkpoint(meta, *load_text_components(meta.text_model))

    def answer(self, record: SampleRecord, queries: Sequence[str]) -> tuple[list[np.ndarray], list[bool]]:
        """Per query: its (S, S) bool mask, empty where the model answers "not found", and whether it was found."""
        asked = SampleRecord(record.index, record.image, record.features, [], {**record.meta, "classes": list(queries)})
        masks = predict(self.model, collate([asked], self.embedder, self.model.config.mask_size))[0].numpy()
        return list(masks), [bool(mask.any()) for mask in masks]


def sharing_absent_class(record: SampleRecord, candidates: Sequence[str]) -> str | None:
    """The first of `candidates` absent from `record` that shares a word with one of its objects, if any."""
    return next((n for n in candidates if n not in record.classes and shares_word(n, record.classes)), None)


def panel(axis, image: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[str], title: str) -> None:
    axis.imshow(overlay(image, list(masks)), interpolation="nearest")
    axis.set_axis_off()
    axis.set_title(title, fontsize=8)
    axis.legend(handles=legend_handles(list(labels)), fontsize=6, loc="lower right")


def labelled(queries: Sequence[str], found: Sequence[bool]) -> list[str]:
    return [name if hit else f"{name}: not found" for name, hit in zip(queries, found, strict=True)]


def draw_asked(
    grounders: tuple[tuple[str, Grounder], tuple[str, Grounder]], asked: list[tuple[SampleRecord, str]], out: Path
) -> Path:
    """One row per (render, absent class), one column per named grounder: each asked for the render's
    objects and that class."""
    figure, axes = plt.subplots(len(asked), 2, figsize=(6, 3 * len(asked)), squeeze=False)
    for row, (record, absent) in enumerate(asked):
        queries = [*record.classes, absent]
        for axis, (name, grounder) in zip(axes[row], grounders, strict=True):
            masks, found = grounder.answer(record, queries)
            panel(axis, record.image, masks, labelled(queries, found), f"{name}\nasked also for {absent!r}")
    return save_figure(figure, out)


def draw_absent(shipped: Grounder, negatives: Grounder, records: list[SampleRecord], out: Path) -> Path:
    asked = [
        (record, next(name for name in ("green disc", "red cross", "blue ring") if name not in record.classes))
        for record in records
    ]
    return draw_asked((("shipped (paper's method)", shipped), ("with negatives", negatives)), asked, out)


def draw_overlap(shipped: Grounder, subtract: Grounder, records: list[SampleRecord], out: Path) -> Path:
    figure, axes = plt.subplots(len(records), 3, figsize=(9, 3 * len(records)), squeeze=False)
    for row, record in enumerate(records):
        panel(axes[row][0], record.image, record.masks, record.classes, "exact masks")
        for axis, (name, grounder) in zip(
            axes[row][1:], (("without subtraction", shipped), ("with subtraction", subtract)), strict=True
        ):
            masks, found = grounder.answer(record, record.classes)
            panel(axis, record.image, masks, labelled(record.classes, found), name)
    return save_figure(figure, out)


def draw_counts(shipped: Grounder, records: list[SampleRecord], out: Path) -> Path:
    figure, axes = plt.subplots(2, len(records), figsize=(3 * len(records), 6), squeeze=False)
    for column, record in enumerate(records):
        panel(axes[0][column], record.image, record.masks, record.classes, f"{len(record.classes)} objects: exact")
        masks, found = shipped.answer(record, record.classes)
        panel(axes[1][column], record.image, masks, labelled(record.classes, found), "shipped checkpoint")
    return save_figure(figure, out)


def draw_rule(default: Grounder, tuned: Grounder, records: Iterable[SampleRecord], out: Path) -> Path:
    """Renders asked also for an absent class that shares a word with one of their objects: the first two
    where the tuned rule turns the absent class away and the default rule does not, then the first where
    the tuned rule turns away a present object (what it costs: T-acc)."""
    wins: list[tuple[SampleRecord, list[str], list[Any]]] = []
    loss: list[tuple[SampleRecord, list[str], list[Any]]] = []
    for record in records:
        absent = [name for name in SEEN_CLASSES if name not in record.classes and shares_word(name, record.classes)]
        for name in absent:
            queries = [*record.classes, name]
            answers = [grounder.answer(record, queries) for grounder in (default, tuned)]
            (_, before), (_, after) = answers
            if before[-1] and not after[-1] and after[:-1] == before[:-1] and len(wins) < 2:
                wins.append((record, queries, answers))
            elif any(b and not a for b, a in zip(before[:-1], after[:-1], strict=True)) and not loss:
                loss.append((record, queries, answers))
            break
        if len(wins) == 2 and loss:
            break
    shown = wins + loss
    figure, axes = plt.subplots(len(shown), 2, figsize=(6, 3 * len(shown)), squeeze=False)
    for row, (record, queries, answers) in enumerate(shown):
        for axis, title, (masks, found) in zip(
            axes[row], ("default rule: presence > 0.5", "rule tuned on validation"), answers, strict=True
        ):
            panel(axis, record.image, masks, labelled(queries, found), f"{title}\nasked also for {queries[-1]!r}")
    return save_figure(figure, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--objects", type=Path, required=True)
    parser.add_argument("--negatives", type=Path, required=True)
    parser.add_argument("--subtract", type=Path, required=True)
    parser.add_argument("--tuned", type=Path, default=None, help="a checkpoint with a tuned answer rule")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped = Grounder(GROUNDING_DIR)
    seen = open_set(str(args.bench / "truth-test-seen"))
    draw_absent(shipped, Grounder(args.negatives), [seen[i] for i in (0, 1)], REPOSITORY / "docs/absent_objects.png")
    sharing = [seen[i] for i in range(len(seen)) if shares_a_word(seen[i].classes)][:2]
    draw_overlap(shipped, Grounder(args.subtract), sharing, REPOSITORY / "docs/overlap.png")
    counts = [open_set(str(args.objects / f"truth-test-seen-n{n}"))[0] for n in (1, 3, 4)]
    draw_counts(shipped, counts, REPOSITORY / "docs/object_counts.png")
    if args.tuned is not None:
        records = (seen[i] for i in range(len(seen)))
        default, tuned = Grounder(args.tuned, default_rule=True), Grounder(args.tuned)
        draw_rule(default, tuned, records, REPOSITORY / "docs/absent_rule.png")


if __name__ == "__main__":
    main()

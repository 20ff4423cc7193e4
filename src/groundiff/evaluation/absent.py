"""Absent objects, measured as generalized referring segmentation does (gRefCOCO): each test image is
asked for its own objects and for one class it does not contain, all in one grounding prompt.

- **N-acc**: the share of absent queries answered empty ("not found", or a mask without a pixel),
  also split by whether the absent class shares a word with a present one ("red disc" beside a red
  ring: the hard case for a text encoder that reads a bag of words) or not;
- **T-acc**: the share of present queries answered with a non-empty mask;
- **mIoU on present queries**: category-wise, a "not found" answer scored as an empty mask.

The absent class is drawn from the other classes of the same set (truth sets list every object of
a render, so such a class is truly absent; on generated sets it is a class the prompt did not name).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from groundiff.data.batching import ClassEmbedder, NegativeQueries, collate, shares_word
from groundiff.data.records import SampleRecord
from groundiff.evaluation.evaluate import predict, summarize
from groundiff.evaluation.metrics import IoUAccumulator, proportion_ci95
from groundiff.model import GroundingModel


def set_classes(dataset: Dataset[SampleRecord]) -> tuple[str, ...]:
    """Every class named by a sample of `dataset`, sorted."""
    names: set[str] = set()
    for position in range(len(dataset)):  # type: ignore[arg-type]
        names.update(dataset[position].classes)
    return tuple(sorted(names))


@torch.no_grad()
def evaluate_absent_queries(
    model: GroundingModel,
    dataset: Dataset[SampleRecord],
    embedder: ClassEmbedder,
    pool: tuple[str, ...],
    *,
    seed: int = 0,
    batch_size: int = 4,
) -> dict[str, Any]:
    """N-acc, T-acc (in %, with 95 % Wilson intervals) and present-query mIoU of `model` when every image
    of `dataset` is also asked for one class of `pool` that it does not contain.

    Raises:
        ValueError: a pool with no class absent from some image (nothing to ask for).
    """
    was_training = model.training
    model.eval()
    mask_size = getattr(getattr(model, "config", None), "mask_size", None)
    negatives = NegativeQueries(pool, fraction=1.0, seed=seed)
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        collate_fn=partial(collate, embedder=embedder, mask_size=mask_size, negatives=negatives),
    )
    accumulator = IoUAccumulator()
    counts = {"absent": 0, "absent_empty": 0, "present": 0, "present_nonempty": 0}
    by_word = {group: {"absent": 0, "absent_empty": 0} for group in ("share a word", "share no word")}
    for batch in loader:
        predicted = predict(model, batch).cpu()  # (B, N, H, W)
        answered = predicted.flatten(2).any(dim=2)  # (B, N)
        for b, queries in enumerate(batch.classes):
            present = batch.present[b, : len(queries)]
            if bool(present.all()):
                raise ValueError(
                    f"Sample {batch.indices[b]} names every class of the pool {pool}; give a pool with classes "
                    "absent from each image (e.g. every class of the set)."
                )
            kept = [slot for slot in range(len(queries)) if present[slot]]
            accumulator.update(predicted[b, kept], batch.targets[b, kept] > 0.5, [queries[slot] for slot in kept])
            present_names = [queries[slot] for slot in kept]
            for slot in (slot for slot in range(len(queries)) if not present[slot]):
                group = by_word["share a word" if shares_word(queries[slot], present_names) else "share no word"]
                for tally in (counts, group):
                    tally["absent"] += 1
                    tally["absent_empty"] += int(not answered[b, slot])
            counts["present"] += int(present.sum())
            counts["present_nonempty"] += int((present & answered[b, : len(queries)]).sum())
    model.train(was_training)
    return {
        **summarize(accumulator),
        "n_acc": 100 * counts["absent_empty"] / counts["absent"],
        "n_acc_ci95": [100 * bound for bound in proportion_ci95(counts["absent_empty"], counts["absent"])],
        "t_acc": 100 * counts["present_nonempty"] / counts["present"],
        "t_acc_ci95": [100 * bound for bound in proportion_ci95(counts["present_nonempty"], counts["present"])],
        "queries": counts,
        "n_acc_by_word": {group: _percent(c["absent_empty"], c["absent"]) for group, c in by_word.items()},
        "pool": list(pool),
        "seed": seed,
    }


def _percent(successes: int, total: int) -> dict[str, Any]:
    """{"n_acc": %, "n_acc_ci95": [low, high] %, "queries": total}; None figures when nothing was asked."""
    if not total:
        return {"n_acc": None, "n_acc_ci95": None, "queries": 0}
    low, high = proportion_ci95(successes, total)
    return {"n_acc": 100 * successes / total, "n_acc_ci95": [100 * low, 100 * high], "queries": total}

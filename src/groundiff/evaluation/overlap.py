"""Overlapping masks: how many predicted pixels two objects of one image both claim.

CLIP's bag of words puts "red ring"'s words into "blue disc"'s embedding too, so two objects that
share a word (a colour or a shape) can be given each other's pixels. Per image, the overlap is
|P_a ∩ P_b| over |P_a ∪ P_b| for each pair of its queried objects; a group's overlap rate is the
sum of the intersections over the sum of the unions (pixel-weighted), with a bootstrap interval
over images. Images are grouped by whether their objects share a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from groundiff.data.batching import ClassEmbedder, collate
from groundiff.data.records import SampleRecord
from groundiff.evaluation.evaluate import predict, summarize
from groundiff.evaluation.metrics import IoUAccumulator, ratio_ci95
from groundiff.model import GroundingModel

GROUPS = ("share a word", "share no word")


@dataclass
class _Group:
    iou: IoUAccumulator = field(default_factory=IoUAccumulator)
    predicted: list[tuple[int, int]] = field(default_factory=list)  # per image: (shared, claimed) pixels
    target: list[tuple[int, int]] = field(default_factory=list)


def shares_a_word(classes: list[str]) -> bool:
    """Whether two of the class names have a word in common ("red ring", "red disc": yes)."""
    return any(set(a.split()) & set(b.split()) for a, b in combinations(classes, 2))


def pair_overlap(masks: torch.Tensor) -> tuple[int, int]:
    """(Σ |M_a ∩ M_b|, Σ |M_a ∪ M_b|) over the pairs of (N, H, W) bool masks."""
    shared = claimed = 0
    for a, b in combinations(range(masks.shape[0]), 2):
        shared += int((masks[a] & masks[b]).sum())
        claimed += int((masks[a] | masks[b]).sum())
    return shared, claimed


@torch.no_grad()
def evaluate_overlap(
    model: GroundingModel, dataset: Dataset[SampleRecord], embedder: ClassEmbedder, *, batch_size: int = 4
) -> dict[str, dict[str, Any]]:
    """Per group (`GROUPS`, plus `all`): the predicted masks' overlap rate (in %, with its 95 % bootstrap
    interval), the target masks' own overlap rate, and the category-wise mIoU of the group's images."""
    was_training = model.training
    model.eval()
    mask_size = getattr(getattr(model, "config", None), "mask_size", None)
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        collate_fn=partial(collate, embedder=embedder, mask_size=mask_size),
    )
    groups = {name: _Group() for name in (*GROUPS, "all")}
    for batch in loader:
        predicted = predict(model, batch).cpu()  # (B, N, H, W)
        for b, classes in enumerate(batch.classes):
            n = len(classes)
            target = batch.targets[b, :n] > 0.5
            for name in (GROUPS[0] if shares_a_word(classes) else GROUPS[1], "all"):
                groups[name].iou.update(predicted[b, :n], target, classes)
                groups[name].predicted.append(pair_overlap(predicted[b, :n]))
                groups[name].target.append(pair_overlap(target))
    model.train(was_training)
    return {name: _group_row(group) for name, group in groups.items() if group.predicted}


def _group_row(group: _Group) -> dict[str, Any]:
    shared, claimed = np.array(group.predicted, dtype=float).T  # (images,) each
    true_shared, true_claimed = np.array(group.target, dtype=float).T
    summary = summarize(group.iou)
    return {
        "overlap": 100 * shared.sum() / max(claimed.sum(), 1.0),
        "overlap_ci95": [100 * bound for bound in ratio_ci95(shared, claimed)],
        "target_overlap": 100 * true_shared.sum() / max(true_claimed.sum(), 1.0),
        "miou": summary["miou"],
        "miou_ci95": summary["miou_ci95"],
        "images": summary["samples"],
    }

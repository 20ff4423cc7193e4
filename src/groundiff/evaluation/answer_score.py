"""Fit the answer score of `model.answers` on a validation set: a logistic regression of "present"
against "absent" over each query's class-agnostic mask statistics (`ANSWER_FEATURES`), then the
threshold with the highest N-acc among those whose T-acc stays at or above a floor.

Why a score and not a grid of thresholds: the grid's presence threshold reads a presence output that
sees the class's mask embedding, so a threshold chosen on seen classes turns away present objects of
classes the model never saw. The statistics here read alike for every class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

L2 = 1e-3  # ridge on the standardized weights: keeps a near-separable set from sending them to infinity


@dataclass(frozen=True)
class QueryTable:
    """Every query asked of a set, flattened: what the score reads and what the answer should be."""

    features: torch.Tensor  # (Q, F) float64, `model.answers.answer_features`
    present: torch.Tensor  # (Q,) bool: the object is in the image
    eligible: torch.Tensor  # (Q,) bool: found under the rest of the rule (a mask pixel, presence, own share)


def fit_answer_weights(table: QueryTable, min_t_acc: float) -> dict[str, Any]:
    """The answer score fitted on `table`, its threshold chosen as `best_threshold` does and folded
    into the bias, so that an object is found where the score is above 0.

    Returns:
        {"answer_weights": weights of `ANSWER_FEATURES` then the bias, "n_acc", "t_acc" (on `table`)}.

    Raises:
        ValueError: the table lacks present or absent queries with a mask (nothing to tell apart).
    """
    rows = table.eligible
    if not bool((table.present & rows).any()) or not bool((~table.present & rows).any()):
        raise ValueError(
            "Fitting an answer score needs present and absent queries that both paint a mask; this validation "
            "set has only one kind. Use a larger validation set, or --rule grid."
        )
    features, labels = table.features[rows], table.present[rows].double()
    mean, scale = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    standardized = (features - mean) / scale
    # Both answers weigh alike, however many of each the set asks; the threshold sets the trade later.
    balance = torch.where(labels > 0, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))
    parameters = torch.zeros(features.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([parameters], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        logits = standardized @ parameters[:-1] + parameters[-1]
        value = F.binary_cross_entropy_with_logits(logits, labels, weight=balance) + L2 * parameters[:-1].square().sum()
        value.backward()
        return value

    optimizer.step(loss)  # type: ignore[no-untyped-call]
    weights = parameters.detach()[:-1] / scale
    bias = parameters.detach()[-1] - (weights * mean).sum()
    threshold, n_acc, t_acc = best_threshold(table.features @ weights + bias, table, min_t_acc)
    return {"answer_weights": [*weights.tolist(), float(bias - threshold)], "n_acc": n_acc, "t_acc": t_acc}


def best_threshold(scores: torch.Tensor, table: QueryTable, min_t_acc: float) -> tuple[float, float, float]:
    """The threshold on `scores` (Q,) (found: eligible and score above it) with the highest N-acc among
    those with T-acc ≥ `min_t_acc` %, else the one with the highest T-acc; with its N-acc and T-acc in %.

    Thresholds lie halfway between neighbouring scores, so float rounding cannot move a query across one.
    """
    scores = scores.double()
    present = table.present
    values = torch.unique(scores[table.eligible])  # sorted
    candidates = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    found_present = _above(scores[table.eligible & present], candidates)
    found_absent = _above(scores[table.eligible & ~present], candidates)
    t_acc = 100 * found_present / max(int(present.sum()), 1)
    n_acc = 100 * (1 - found_absent / max(int((~present).sum()), 1))
    ok = t_acc >= min_t_acc
    # Highest N-acc among the eligible, ties to the higher T-acc; else the highest T-acc (the lowest threshold).
    key = torch.where(ok, n_acc * 1e3 + t_acc, torch.full_like(n_acc, -1.0))
    best = int(key.argmax()) if bool(ok.any()) else 0
    return float(candidates[best]), float(n_acc[best]), float(t_acc[best])


def _above(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(T,) float64: how many of `scores` lie above each threshold."""
    ordered = torch.sort(scores).values
    return (len(ordered) - torch.searchsorted(ordered, thresholds, right=True)).double()

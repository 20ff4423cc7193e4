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

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from groundiff.data.batching import ClassEmbedder, NegativeQueries, collate, shares_word
from groundiff.data.records import SampleRecord
from groundiff.evaluation.answer_score import QueryTable, best_threshold, fit_answer_weights
from groundiff.evaluation.config import MIN_T_ACC, check_answer_rule
from groundiff.evaluation.evaluate import summarize
from groundiff.evaluation.metrics import IoUAccumulator, proportion_ci95
from groundiff.model import GroundingModel
from groundiff.model.answers import answer_features, answer_rule, found_queries


def set_classes(dataset: Dataset[SampleRecord]) -> tuple[str, ...]:
    """Every class named by a sample of `dataset`, sorted."""
    names: set[str] = set()
    for position in range(len(dataset)):  # type: ignore[arg-type]
        names.update(dataset[position].classes)
    return tuple(sorted(names))


# The rules `tune_answer_rule` tries: presence probabilities an object must exceed (0 = the presence
# output is not read) and shares of its mask it must keep against the other queries (0 = no contest).
PRESENCE_THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
OWN_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
LAXEST_RULE: dict[str, Any] = {"presence_threshold": 0.0, "min_own_share": 0.0, "answer_weights": None}  # any mask


@dataclass
class _Answers:
    """One batch's answers to present and absent queries, on the CPU, to be scored under several rules."""

    classes: list[list[str]]
    present: torch.Tensor  # (B, N) bool
    valid: torch.Tensor  # (B, N) bool
    targets: torch.Tensor  # (B, N, S, S) bool
    logits: torch.Tensor  # (B, N, S, S) float32
    presence: torch.Tensor | None  # (B, N) float


def evaluate_absent_queries(
    model: GroundingModel,
    dataset: Dataset[SampleRecord],
    embedder: ClassEmbedder,
    pool: tuple[str, ...],
    *,
    seed: int = 0,
    batch_size: int = 4,
    ceiling_t_acc: float | None = None,
) -> dict[str, Any]:
    """N-acc, T-acc (in %, with 95 % Wilson intervals) and present-query mIoU of `model`, answering under
    its config's rule (`GroundingModel.found`), when every image of `dataset` is also asked for one
    class of `pool` that it does not contain.

    `t_acc_bound` is the share of present queries whose mask has a pixel: no rule's T-acc can exceed it.
    With `ceiling_t_acc`, the result also holds `ceiling`: the rule of the tuning grid with the highest
    N-acc on this very set among those whose T-acc here is at least `ceiling_t_acc` % (the choice and
    its N-acc and T-acc); for a model with an answer score, the best threshold of that score on this set.
    No rule chosen on validation data can beat it, so when the ceiling misses a target, the model's
    masks and presence outputs (or its score) are what fall short, not the choice of rule.

    Raises:
        ValueError: a pool with no class absent from some image (nothing to ask for).
    """
    answers = _answer_absent_queries(model, dataset, embedder, pool, seed=seed, batch_size=batch_size)
    scores = {**_score(answers, answer_rule(model.config), with_iou=True), "pool": list(pool), "seed": seed}
    # No rule finds a present object whose mask is empty: this T-acc bounds every rule's.
    scores["t_acc_bound"] = _score(answers, LAXEST_RULE, with_iou=False)["t_acc"]
    if ceiling_t_acc is not None:
        scores["ceiling"] = {**_ceiling(answers, model, ceiling_t_acc), "min_t_acc": ceiling_t_acc}
    return scores


def tune_answer_rule(
    model: GroundingModel,
    dataset: Dataset[SampleRecord],
    embedder: ClassEmbedder,
    pool: tuple[str, ...],
    *,
    min_t_acc: float = MIN_T_ACC,
    rule: str = "grid",
    seed: int = 0,
    batch_size: int = 4,
) -> dict[str, Any]:
    """The answer rule (see `model.answers`) with the highest N-acc on `dataset` among those whose T-acc
    is at least `min_t_acc` % (the highest T-acc when none is). A validation set's job: the rule trades
    N-acc against T-acc, so choosing it on a test set would flatter both.

    `rule="grid"` tries the `presence_threshold` × `min_own_share` rules of `PRESENCE_THRESHOLDS` ×
    `OWN_SHARES`; `rule="score"` fits an answer score (`evaluation.answer_score`) and its threshold.

    Returns:
        {"presence_threshold", "min_own_share", "answer_weights", "n_acc", "t_acc" (of the chosen rule),
        "rule", "min_t_acc", "queries", "grid": every grid rule with its N-acc and T-acc, for comparison}.
    """
    check_answer_rule(rule, "rule")
    answers = _answer_absent_queries(model, dataset, embedder, pool, seed=seed, batch_size=batch_size)
    grid = _rule_grid(answers, _thresholds(model))
    if rule == "grid":
        choice = _best_rule(grid, min_t_acc)
    else:
        fit = fit_answer_weights(_query_table(answers, LAXEST_RULE), min_t_acc)
        fitted = {**LAXEST_RULE, "answer_weights": fit["answer_weights"]}
        scores = _score(answers, fitted, with_iou=False)  # as `found_queries` will answer, in float32
        choice = {**fitted, "n_acc": scores["n_acc"], "t_acc": scores["t_acc"], "queries": scores["queries"]}
    return {
        **choice,
        "rule": rule,
        "min_t_acc": min_t_acc,
        "grid": [{**answer_rule(row), "n_acc": row["n_acc"], "t_acc": row["t_acc"]} for row in grid],
    }


def _thresholds(model: GroundingModel) -> tuple[float, ...]:
    """The presence thresholds worth trying: a model without a presence output ignores them."""
    return PRESENCE_THRESHOLDS if model.presence_head is not None else (model.config.presence_threshold,)


def _rule_grid(answers: list[_Answers], thresholds: tuple[float, ...]) -> list[dict[str, Any]]:
    """N-acc and T-acc of every rule of `thresholds` × `OWN_SHARES` on the same answers."""
    grid = []
    for threshold, share in itertools.product(thresholds, OWN_SHARES):
        rule = {**LAXEST_RULE, "presence_threshold": threshold, "min_own_share": share}
        scores = _score(answers, rule, with_iou=False)
        grid.append({**rule, "n_acc": scores["n_acc"], "t_acc": scores["t_acc"], "queries": scores["queries"]})
    return grid


def _best_rule(grid: list[dict[str, Any]], min_t_acc: float) -> dict[str, Any]:
    """The row of `grid` with the highest N-acc among those with T-acc ≥ `min_t_acc`, else the highest T-acc."""
    eligible = [row for row in grid if row["t_acc"] >= min_t_acc]
    if eligible:
        return max(eligible, key=lambda row: (row["n_acc"], row["t_acc"]))
    return max(grid, key=lambda row: (row["t_acc"], row["n_acc"]))


def _ceiling(answers: list[_Answers], model: GroundingModel, min_t_acc: float) -> dict[str, Any]:
    """The best rule on these answers at T-acc ≥ `min_t_acc`: of the grid, or, for a model with an answer
    score, of that score's thresholds (the rest of its rule kept)."""
    rule = answer_rule(model.config)
    if rule["answer_weights"] is None:
        return _best_rule(_rule_grid(answers, _thresholds(model)), min_t_acc)
    table = _query_table(answers, {**rule, "answer_weights": None})
    weights = torch.tensor(rule["answer_weights"], dtype=torch.float64)
    threshold, n_acc, t_acc = best_threshold(table.features @ weights[:-1] + weights[-1], table, min_t_acc)
    shifted = [*weights[:-1].tolist(), float(weights[-1] - threshold)]
    return {**rule, "answer_weights": shifted, "n_acc": n_acc, "t_acc": t_acc}


def _query_table(answers: list[_Answers], rule: dict[str, Any]) -> QueryTable:
    """Every valid query of `answers`, flattened, with the answer features and whether `rule` finds it."""
    features, present, eligible = [], [], []
    for batch in answers:
        valid = batch.valid
        features.append(answer_features(batch.logits, valid)[valid].double())
        present.append(batch.present[valid])
        eligible.append(found_queries(batch.logits, batch.presence, valid, **rule)[valid])
    return QueryTable(torch.cat(features), torch.cat(present), torch.cat(eligible))


@torch.no_grad()
def _answer_absent_queries(
    model: GroundingModel,
    dataset: Dataset[SampleRecord],
    embedder: ClassEmbedder,
    pool: tuple[str, ...],
    *,
    seed: int,
    batch_size: int,
) -> list[_Answers]:
    """The model's answers when every image of `dataset` is asked for its objects and one absent class."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mask_size = getattr(getattr(model, "config", None), "mask_size", None)
    negatives = NegativeQueries(pool, fraction=1.0, seed=seed)
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        collate_fn=partial(collate, embedder=embedder, mask_size=mask_size, negatives=negatives),
    )
    answers = []
    for batch in loader:
        for b, queries in enumerate(batch.classes):
            if bool(batch.present[b, : len(queries)].all()):
                raise ValueError(
                    f"Sample {batch.indices[b]} names every class of the pool {pool}; give a pool with classes "
                    "absent from each image (e.g. every class of the set)."
                )
        on_device = batch.to(device)
        output = model.answer(on_device.features, on_device.embeddings, ~on_device.valid)
        answers.append(
            _Answers(
                classes=[list(queries) for queries in batch.classes],
                present=batch.present.clone(),
                valid=batch.valid.clone(),
                targets=batch.targets > 0.5,
                logits=output.logits.detach().float().cpu(),
                presence=None if output.presence is None else output.presence.detach().float().cpu(),
            )
        )
    model.train(was_training)
    return answers


# A third group of absent queries beside "share a word" / "share no word", a subset of the first: names
# whose words all name present objects, spread over two or more of them ("red disc" beside a red ring and
# a blue disc), where a query must bind its words to one object to answer.
EVERY_WORD = "every word present"


def has_every_word(name: str, others: Sequence[str]) -> bool:
    """Whether every word of a several-word `name` occurs among `others`' names ("red disc", ["red ring",
    "blue disc"] → True; a one-word name never counts)."""
    words = name.split()
    present = {word for other in others if other != name for word in other.split()}
    return len(words) > 1 and set(words) <= present


def _score(answers: list[_Answers], rule: dict[str, Any], *, with_iou: bool) -> dict[str, Any]:
    """N-acc, T-acc (overall and by word sharing) and, `with_iou`, present-query mIoU under `rule`."""
    accumulator = IoUAccumulator()
    counts = {"absent": 0, "absent_empty": 0, "present": 0, "present_nonempty": 0}
    by_word = {group: {"absent": 0, "absent_empty": 0} for group in ("share a word", "share no word", EVERY_WORD)}
    for batch in answers:
        found = found_queries(batch.logits, batch.presence, batch.valid, **rule)  # (B, N)
        masks = batch.logits.sigmoid() > 0.5
        for b, queries in enumerate(batch.classes):
            present = batch.present[b, : len(queries)]
            kept = [slot for slot in range(len(queries)) if present[slot]]
            if with_iou:
                predicted = masks[b, kept] & found[b, kept, None, None]
                accumulator.update(predicted, batch.targets[b, kept], [queries[slot] for slot in kept])
            present_names = [queries[slot] for slot in kept]
            for slot in (slot for slot in range(len(queries)) if not present[slot]):
                shared = shares_word(queries[slot], present_names)
                groups = [by_word["share a word" if shared else "share no word"]]
                if has_every_word(queries[slot], present_names):
                    groups.append(by_word[EVERY_WORD])
                for tally in (counts, *groups):
                    tally["absent"] += 1
                    tally["absent_empty"] += int(not found[b, slot])
            counts["present"] += int(present.sum())
            counts["present_nonempty"] += int((present & found[b, : len(queries)]).sum())
    return {
        **(summarize(accumulator) if with_iou else {}),
        "n_acc": 100 * counts["absent_empty"] / counts["absent"],
        "n_acc_ci95": [100 * bound for bound in proportion_ci95(counts["absent_empty"], counts["absent"])],
        "t_acc": 100 * counts["present_nonempty"] / counts["present"],
        "t_acc_ci95": [100 * bound for bound in proportion_ci95(counts["present_nonempty"], counts["present"])],
        "queries": counts,
        "n_acc_by_word": {group: _percent(c["absent_empty"], c["absent"]) for group, c in by_word.items()},
        "rule": dict(rule),
    }


def _percent(successes: int, total: int) -> dict[str, Any]:
    """{"n_acc": %, "n_acc_ci95": [low, high] %, "queries": total}; None figures when nothing was asked."""
    if not total:
        return {"n_acc": None, "n_acc_ci95": None, "queries": 0}
    low, high = proportion_ci95(successes, total)
    return {"n_acc": 100 * successes / total, "n_acc_ci95": [100 * low, 100 * high], "queries": total}

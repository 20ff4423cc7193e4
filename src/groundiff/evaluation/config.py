"""`EvaluateConfig`: what `groundiff evaluate` scores and where it writes (light to import, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from groundiff.config import REQUIRED, option

# The lowest validation T-acc (%) an answer rule may have (`evaluation.absent.tune_answer_rule`). 99, not
# the 98 that a rule should reach on test renders: a generated validation set lists only the objects its
# labeler found, which leaves out the small and hidden ones that a rule most often turns away, so its
# T-acc runs about a point above the T-acc on exact-mask renders (docs/RESULTS.md, absent objects).
MIN_T_ACC = 99.0
# How `groundiff tune-answers` may answer "not found": grid = a presence threshold and an own share
# (`evaluation.absent`), score = a logistic score over class-agnostic mask statistics
# (`evaluation.answer_score`).
ANSWER_RULES = ("grid", "score")


def check_answer_rule(rule: str, name: str) -> None:
    """Raise ValueError, naming the option `name`, unless `rule` is one of `ANSWER_RULES`."""
    if rule not in ANSWER_RULES:
        raise ValueError(f"{name}={rule!r} is not an answer rule; choose one of {', '.join(ANSWER_RULES)}.")


@dataclass
class EvaluateConfig:
    """A checkpoint's evaluation on test sets; see `groundiff.evaluation.evaluate.evaluate_checkpoint`."""

    checkpoint: str = option(REQUIRED, "a checkpoint folder (runs/.../best)")
    data: tuple[str, ...] = option(
        REQUIRED, "test set folders: generated sets and/or truth sets, one per kind", many=True
    )
    val: tuple[str, ...] | None = option(
        None,
        "validation sets (generated and/or truth, with attention maps) on which the cross-attention "
        "thresholds are chosen; without them DAAM's 0.4 is used",
        many=True,
    )
    out: str = option(REQUIRED, "results JSON; .md table and PNG pictures go beside it")
    top_quality: float | None = option(None, "keep this top fraction by IQA score")
    attention_baseline: bool = option(False, "also score the cross-attention reference (DAAM-style)", switch=True)
    absent_queries: bool = option(
        False, "also ask each image for one class it does not contain: N-acc and T-acc (gRefCOCO)", switch=True
    )
    cross_model: bool = option(
        False,
        "test on sets of another diffusion model with the same text encoder and feature layout (a fine-tune, "
        "another version), as the paper's cross-model tables do",
        switch=True,
    )

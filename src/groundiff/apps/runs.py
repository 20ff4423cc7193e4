"""`train_and_evaluate`: the one "train on train/val, evaluate the best checkpoint on the test sets" that
the demo, the paper's tables (`results`) and single experiments all run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from groundiff.evaluation.evaluate import EvaluationReport
    from groundiff.training.config import TrainConfig
    from groundiff.training.loop import TrainReport


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a run's best checkpoint: the test sets, where its JSON goes, and how it scores.

    `top_quality` keeps the best share of each test set by quality score; `references` also scores the
    cross-attention rows, at thresholds tuned on the validation sets `val`.
    """

    tests: tuple[Path, ...]
    out: Path
    top_quality: float | None = None
    references: bool = False
    val: tuple[Path, ...] = ()


@dataclass
class RunOutcome:
    report: TrainReport
    evaluations: list[EvaluationReport]
    train_cpu_seconds: float  # CPU time of this process's training (0 for a run finished earlier)


def train_and_evaluate(
    config: TrainConfig,
    evaluations: Sequence[Evaluation],
    *,
    resume: bool = True,
    before_evaluating: Callable[[], None] | None = None,
) -> RunOutcome:
    """Train (or, with `resume`, continue or just report a finished run in `config.out`), then evaluate its
    best checkpoint once per entry of `evaluations`.

    `before_evaluating` runs between the two, e.g. to wait for test sets still being generated.
    """
    # Imported here so that the CLI can read the app configs without loading torch-heavy modules.
    from groundiff.evaluation.evaluate import evaluate_checkpoint
    from groundiff.training.loop import train, train_or_resume

    cpu_start = time.process_time()
    report = train_or_resume(config) if resume else train(config)
    train_cpu_seconds = time.process_time() - cpu_start
    if before_evaluating is not None:
        before_evaluating()
    best = Path(config.out) / "best"
    reports = [
        evaluate_checkpoint(
            best,
            list(evaluation.tests),
            evaluation.out,
            top_quality=evaluation.top_quality,
            attention_baseline=evaluation.references,
            val=list(evaluation.val),
        )
        for evaluation in evaluations
    ]
    return RunOutcome(report, reports, train_cpu_seconds)

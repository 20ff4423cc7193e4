"""The paper's experiments by name: a shipped TrainConfig file each, run and appended to a results table.

    groundiff experiment table4-loss-dice --train data/train --val data/val \
        --test data/test-seen data/test-mixed data/test-unseen --out runs/experiments --seed 1
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundiff.apps.runs import Evaluation, train_and_evaluate
from groundiff.config import REQUIRED, option, read_config_file

EXPERIMENTS_DIR = Path(__file__).parents[1] / "configs" / "experiments"
RESULTS_FILE = "results.csv"


def experiment_names() -> list[str]:
    return sorted(path.stem for path in EXPERIMENTS_DIR.glob("*.yaml"))


def experiment_config(name: str) -> dict[str, Any]:
    """The TrainConfig fields of a shipped experiment."""
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"Unknown experiment {name!r}; shipped experiments: {', '.join(experiment_names())}.")
    return read_config_file(path)


@dataclass
class ExperimentConfig:
    """One run of a shipped experiment (`groundiff experiment`): its sets, run folder, seed and overrides."""

    name: str = option(REQUIRED, "e.g. table2-improved, table4-loss-dice; 'list' to see all", positional=True)
    train: str = option("data/train", "")
    val: str = option("data/val", "")
    test: tuple[str, ...] = option(("data/test-seen", "data/test-mixed", "data/test-unseen"), "", many=True)
    out: str = option("runs/experiments", "run folders and results.csv")
    seed: int = option(0, "")
    epochs: int | None = option(None, "override the experiment's epochs")
    model_config: str | None = option(None, "extra TrainConfig fields (e.g. model sizes)")

    def overrides(self) -> dict[str, Any]:
        """TrainConfig fields that replace the experiment's own: `epochs`, then those of `model_config`."""
        fields: dict[str, Any] = {"epochs": self.epochs} if self.epochs else {}
        return {**fields, **(read_config_file(Path(self.model_config)) if self.model_config else {})}


@dataclass
class ExperimentRow:
    experiment: str
    seed: int
    train_samples: int
    best_epoch: int
    val_miou: float
    results: dict[str, float]

    def as_row(self) -> dict[str, Any]:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "results"}
        return {**fields, **{f"{name} mIoU": round(value, 2) for name, value in self.results.items()}}


def run_experiment(config: ExperimentConfig) -> ExperimentRow:
    """Train with the experiment's config, evaluate the best checkpoint, append a row to `out/results.csv`."""
    from groundiff.training.config import TrainConfig  # imported here: it loads torch

    name, seed, out = config.name, config.seed, Path(config.out)
    fields = {**experiment_config(name), **config.overrides()}
    run_dir = out / f"{name}-seed{seed}"
    train, val = str(Path(config.train)), str(Path(config.val))
    train_config = TrainConfig(train=train, val=val, out=str(run_dir), seed=seed, **fields)
    tests = Evaluation(tuple(map(Path, config.test)), run_dir / "test.json")
    outcome = train_and_evaluate(train_config, [tests], resume=False)
    report, evaluation = outcome.report, outcome.evaluations[0]
    row = ExperimentRow(
        experiment=name,
        seed=seed,
        train_samples=int(report.history[0]["samples"]),
        best_epoch=report.best_epoch,
        val_miou=round(report.best_val_miou, 2),
        results={set_name: r["miou"] for set_name, r in evaluation.results.items()},
    )
    append_row(out / RESULTS_FILE, row.as_row())
    return row


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append to a CSV table, widening its header when a row brings new columns."""
    rows: list[dict[str, Any]] = []
    if path.exists():
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    rows.append(row)
    columns = list(dict.fromkeys(key for r in rows for key in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    with open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    temp.replace(path)

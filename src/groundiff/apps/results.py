"""`groundiff results`: the paper's Tables 2, 3, 4 and 8 measured on the mini world, over several seeds.

One set of demo data (train/val/test sets from the shipped mini world) serves every experiment.
Each table row is a shipped experiment config (`configs/experiments/`) with optional overrides;
rows of different tables that train the same config share one run per seed. Every run is
resumable and skipped once evaluated, so the command can be interrupted, rerun, and split over
processes (`--worker i --workers n`, each takes every n-th run; the last to finish writes the
report). Writes `<out>/RESULTS.md` (mean ± std over seeds, the paper's numbers beside ours) and
`<out>/results.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundiff.apps.demo import DEMO_SETS, TEST_SETS, DemoConfig
from groundiff.config import option, read_config_file

log = logging.getLogger(__name__)

SET_LABELS = {
    "test-seen": "seen",
    "test-mixed": "seen+unseen",
    "test-unseen": "unseen",
    "truth-test-seen": "truth seen",
    "truth-test-mixed": "truth seen+unseen",
    "truth-test-unseen": "truth unseen",
}
TRUTH_TEST_SETS = tuple(f"truth-{kind}" for kind in TEST_SETS)


@dataclass(frozen=True)
class Row:
    """One table row: an experiment config, training overrides, and how its test sets are filtered."""

    label: str
    experiment: str
    train_fraction: float = 1.0  # share of the training set (the paper's 10k-of-40k rows)
    top_quality: float | None = None  # evaluate on the best share of each test set by IQA score
    paper: tuple[float | None, float | None, float | None] = (None, None, None)  # seen, seen+unseen, unseen


TABLES_DIR = Path(__file__).parents[1] / "configs" / "tables"


def load_tables(folder: Path = TABLES_DIR) -> dict[str, tuple[str, list[Row]]]:
    """The paper's tables, one YAML file each (`configs/tables/<name>.yaml`): a title and rows of
    `label`, `experiment`, optional `train_fraction`, `top_quality` and `paper` (the paper's mIoU on Pascal
    VOC Split-1 with SD 1.5, for comparison with ours)."""
    tables = {}
    for path in sorted(folder.glob("*.yaml")):
        data = read_config_file(path)
        rows = [Row(**{**row, "paper": tuple(row.get("paper", (None, None, None)))}) for row in data["rows"]]
        tables[path.stem] = (str(data["title"]), rows)
    return tables


TABLES = load_tables()


@dataclass
class ResultsConfig:
    """The measurement: demo data at `size`, every row of `tables`, once per seed in `seeds`."""

    out: str = option("runs/results", "folder: data/, runs/, results.json, RESULTS.md")
    data: str | None = option(
        None,
        "folder of complete pre-generated sets (train, val, test-*; truth-val, truth-test-* when present), "
        "e.g. the paper-sized ones; default: <out>/data, generated at --size",
    )
    model: str = option("miniworld", "the diffusion model that generates the sets (the mini world brings its labeler)")
    size: float = option(2.0, "demo set-size multiplier (2: train 640, val 96, each test set 96)")
    seeds: tuple[int, ...] = option((0, 1, 2), "training seeds (comma-separated); every row runs once per seed")
    tables: tuple[str, ...] = option(tuple(TABLES), "tables to measure (comma-separated): " + ", ".join(TABLES))
    data_seed: int = option(0, "seed of the generated sets")
    steps: int = option(20, "denoising steps of the generated sets")
    guidance_scale: float = option(4.0, "classifier-free guidance scale of the generated sets")
    batch_size: int = option(1, "training batch size (the paper's setting is 1)")
    threads: int | None = option(2, "torch CPU threads per process; runs repeat exactly for a given seed and count")
    train_samples: int | None = option(
        None,
        "size of the whole training set the rows' fractions refer to (default: the train set's); rows that "
        "need more samples than the set holds are reported as not run",
    )
    wait_hours: float = option(12.0, "longest wait for sets that another process is still making")
    worker: int = option(0, "this process's rank when several share the runs")
    workers: int = option(1, "number of processes sharing the runs")
    report_only: bool = option(
        False, "train nothing: write results.json and RESULTS.md from the runs evaluated so far (while others run)"
    )
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown:
            raise ValueError(f"Unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)}.")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed, e.g. --seeds 0,1,2.")
        if not 0 <= self.worker < self.workers:
            raise ValueError(f"--worker {self.worker} does not exist among --workers {self.workers}.")

    def data_folder(self) -> Path:
        return Path(self.data) if self.data else Path(self.out) / "data"

    def demo(self) -> DemoConfig:
        return DemoConfig(
            out=self.out,
            model=self.model,
            size=self.size,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            seed=self.data_seed,
            progress=self.progress,
        )


@dataclass(frozen=True)
class Run:
    """One training run: the fields it trains with (rows that train alike share it) and its seed."""

    name: str
    fields: tuple[tuple[str, Any], ...]
    seed: int


def plan_runs(config: ResultsConfig, train_samples: int) -> tuple[list[Run], dict[tuple[str, str], str | None]]:
    """The distinct runs of the chosen tables, and the run name of each (table, row label): None for a
    row whose share of `config.train_samples` is more than the `train_samples` the set holds."""
    from groundiff.apps.experiments import experiment_config

    names_by_fields: dict[tuple[tuple[str, Any], ...], str] = {}
    row_runs: dict[tuple[str, str], str | None] = {}
    whole = config.train_samples or train_samples
    for table in config.tables:
        for row in TABLES[table][1]:
            fields = dict(_effective_fields(experiment_config(row.experiment)), batch_size=config.batch_size)
            wanted = max(1, round(whole * row.train_fraction))
            if wanted > train_samples:
                row_runs[(table, row.label)] = None
                continue
            if wanted < train_samples:
                fields["max_train_samples"] = wanted
            key = tuple(sorted(fields.items()))
            suffix = "" if row.train_fraction == 1.0 else f"-frac{row.train_fraction:g}"
            row_runs[(table, row.label)] = names_by_fields.setdefault(key, row.experiment + suffix)
    runs = [Run(name, key, seed) for key, name in names_by_fields.items() for seed in config.seeds]
    return runs, row_runs


def _effective_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """An experiment's fields with TrainConfig defaults filled in, so that equal trainings compare equal."""
    from groundiff.training.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in TRAINING_FIELDS}
    return {**defaults, **fields}


# The TrainConfig fields that change what a run learns (not where it reads or writes).
TRAINING_FIELDS = (
    "epochs",
    "lr",
    "beta1",
    "beta2",
    "loss",
    "template",
    "end_of_text",
    "subtract_others",
    "dropout",
    "max_train_samples",
)


def run_results(
    config: ResultsConfig, *, pipe: Any = None, labeler: Any = None, scorer: Any = None
) -> dict[str, Any] | None:
    """Generate the data (this worker's share), run this worker's runs, and write the report when all are done.

    `pipe`, `labeler` and `scorer` replace the model's own (tests use tiny ones). Returns None on a worker
    that finishes before the others.
    """
    from groundiff.apps.demo import generate_demo_sets
    from groundiff.sd.pipelines import load_pipeline

    start = time.perf_counter()
    data = config.data_folder()
    if config.report_only:
        runs, row_runs = plan_runs(config, train_samples=_set_samples(data / "train"))
        return _write_report(config, runs, row_runs, seconds=0.0)
    if config.data:
        missing = [kind for kind in DEMO_SETS if not (data / kind).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"--data {config.data!r} has no set {', '.join(missing)}; it must hold the sets "
                f"{', '.join(DEMO_SETS)} (made by `groundiff generate`, complete or being generated)."
            )
    elif not _sets_complete(data, DEMO_SETS):
        pipe = pipe if pipe is not None else load_pipeline(config.model, device="cpu")
        generate_demo_sets(
            config.demo(), pipe=pipe, labeler=labeler, scorer=scorer, worker=config.worker, workers=config.workers
        )
    # Training needs only train and val: it overlaps the generation of the test sets.
    _wait_for(lambda: _sets_complete(data, ("train", "val")), "the training and validation sets", config.wait_hours)
    runs, row_runs = plan_runs(config, train_samples=_set_samples(data / "train"))
    mine = [run for i, run in enumerate(runs) if i % config.workers == config.worker]
    tops = {row.top_quality for t in config.tables for row in TABLES[t][1]}
    for position, run in enumerate(mine):
        log.info("run %d of %d (this worker): %s seed %d", position + 1, len(mine), run.name, run.seed)
        _run_and_evaluate(config, run, tops)
    report = _write_report(config, runs, row_runs, seconds=time.perf_counter() - start)
    if report["pending"]:
        log.info("worker %d done; the last worker to finish writes the complete report", config.worker)
        return None
    return report


def _write_report(
    config: ResultsConfig, runs: list[Run], row_runs: dict[tuple[str, str], str | None], seconds: float
) -> dict[str, Any]:
    """results.json and RESULTS.md of the runs evaluated so far (a partial report names the pending runs)."""
    from groundiff.files import write_json_atomic, write_text_atomic

    out = Path(config.out)
    report = _collect(config, runs, row_runs, seconds=seconds)
    write_json_atomic(out / "results.json", report)
    write_text_atomic(out / "RESULTS.md", results_markdown(report))
    return report


def _sets_complete(data: Path, kinds: tuple[str, ...]) -> bool:
    from groundiff.data.manifest import MANIFEST_FILE

    return all((data / kind / MANIFEST_FILE).exists() for kind in kinds)


def _test_sets(data: Path) -> tuple[str, ...]:
    """The test sets to evaluate on: the generated ones, and the truth sets whose folders exist."""
    return (*TEST_SETS, *(kind for kind in ("truth-val", *TRUTH_TEST_SETS) if (data / kind).exists()))


def _truth_sets(data: Path, kinds: tuple[str, ...]) -> list[Path]:
    """The truth sets of `kinds` in the data folder (the mini world's; absent elsewhere)."""
    return [data / kind for kind in kinds if (data / kind).exists()]


def _wait_for(done: Callable[[], bool], what: str, hours: float, poll_s: float = 10.0) -> None:
    """Poll until `done()`; a worker or generator that died must not leave this one waiting forever."""
    deadline = time.monotonic() + 3600 * hours
    if not done():
        log.warning("waiting for %s (at most %g h)", what, hours)
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Waited {hours:g} h for {what}; is the process that makes them still running? "
                "Rerun this command once they are complete (finished runs are kept), or raise --wait-hours."
            )
        time.sleep(poll_s)


def _set_samples(folder: Path) -> int:
    from groundiff.data.manifest import read_manifest

    return int(read_manifest(folder)["samples"])


def _run_dir(out: Path, run: Run) -> Path:
    return out / "runs" / f"{run.name}-seed{run.seed}"


def _evaluation_path(out: Path, run: Run) -> Path:
    return _run_dir(out, run) / "evaluation.json"


def _top_key(top_quality: float | None) -> str:
    return "all" if top_quality is None else f"top{round(100 * top_quality)}"


def _run_and_evaluate(config: ResultsConfig, run: Run, tops: set[float | None]) -> None:
    """Train (or resume) one run and evaluate its best checkpoint on every test-set filter; skip a finished one.

    The unfiltered evaluation also scores the truth sets (when the data has them) and every reference.
    """
    from groundiff.apps.runs import Evaluation, train_and_evaluate
    from groundiff.files import write_json_atomic
    from groundiff.training.config import TrainConfig

    out, data = Path(config.out), config.data_folder()
    if _evaluation_path(out, run).exists():
        return
    folder = _run_dir(out, run)
    train_config = TrainConfig(
        train=str(data / "train"),
        val=str(data / "val"),
        out=str(folder),
        seed=run.seed,
        threads=config.threads,
        progress=config.progress,
        **dict(run.fields),
    )
    generated = tuple(data / kind for kind in TEST_SETS)
    truth = tuple(_truth_sets(data, TRUTH_TEST_SETS))
    vals = (data / "val", *_truth_sets(data, ("truth-val",)))
    ordered = sorted(tops, key=lambda t: t or 1.0, reverse=True)
    # Truth sets have no quality scores: the top-quality filters apply to generated sets only. The unfiltered
    # evaluation also scores every reference.
    evaluations = [
        Evaluation(
            generated + truth if top is None else generated,
            folder / f"test-{_top_key(top)}.json",
            top_quality=top,
            references=top is None,
            val=vals,
        )
        for top in ordered
    ]
    outcome = train_and_evaluate(
        train_config,
        evaluations,
        before_evaluating=lambda: _wait_for(
            lambda: _sets_complete(data, _test_sets(data)), "the test sets", config.wait_hours
        ),
    )
    report = outcome.report
    evaluation: dict[str, Any] = {
        "best_epoch": report.best_epoch,
        "val_miou": report.best_val_miou,
        "train_seconds": round(sum(r["seconds"] for r in report.history), 1),
        "train_cpu_seconds": round(outcome.train_cpu_seconds, 1),
        "threads": config.threads,
        "fields": dict(run.fields),
    }
    for top, result in zip(ordered, outcome.evaluations, strict=True):
        evaluation[_top_key(top)] = {kind: _headline(r) for kind, r in result.results.items()}
        if top is None:
            evaluation["references"] = {
                kind: {name: _headline(row) for name, row in r["references"].items()}
                for kind, r in result.results.items()
            }
    write_json_atomic(_evaluation_path(out, run), evaluation)
    # The resumable last/ state (optimizer moments) is no longer needed once evaluated; best/ stays.
    shutil.rmtree(folder / "last", ignore_errors=True)


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    """mIoU, its interval and coverage of one evaluation row (and a reference's threshold)."""
    keys = ("miou", "miou_ci95", "classes_covered", "samples", "threshold")
    return {key: result[key] for key in keys if key in result}


def _collect(
    config: ResultsConfig, runs: list[Run], row_runs: dict[tuple[str, str], str | None], seconds: float
) -> dict[str, Any]:
    """Per table row: mIoU per seed (with its bootstrap interval), mean ± std over seeds per test set, the
    paper's numbers beside them; the references of each test set (seed-independent)."""
    from groundiff.apps.demo import read_keep_rates

    out, data = Path(config.out), config.data_folder()
    evaluations = {
        (run.name, run.seed): json.loads(path.read_text())
        for run in runs
        if (path := _evaluation_path(out, run)).exists()
    }
    tables: dict[str, Any] = {}
    for table in config.tables:
        title, rows = TABLES[table]
        table_rows: list[dict[str, Any]] = []
        for row in rows:
            name = row_runs[(table, row.label)]
            paper = dict(zip(TEST_SETS, row.paper, strict=True))
            if name is None:
                table_rows.append({"label": row.label, "not_run": _not_run(config, row, data), "paper": paper})
                continue
            done = [seed for seed in config.seeds if (name, seed) in evaluations]
            if not done:
                table_rows.append(
                    {"label": row.label, "run": name, "pending_seeds": list(config.seeds), "paper": paper}
                )
                continue
            per_seed = {str(seed): evaluations[(name, seed)][_top_key(row.top_quality)] for seed in done}
            kinds = [k for k in SET_LABELS if k in next(iter(per_seed.values()))]
            table_rows.append(
                {
                    "label": row.label,
                    "run": name,
                    "per_seed": per_seed,
                    "mean": {k: statistics.mean(s[k]["miou"] for s in per_seed.values()) for k in kinds},
                    "std": {k: _std([s[k]["miou"] for s in per_seed.values()]) for k in kinds},
                    "ci95_mean": {
                        k: [statistics.mean(s[k]["miou_ci95"][b] for s in per_seed.values()) for b in (0, 1)]
                        for k in kinds
                    },
                    "paper": paper,
                    "pending_seeds": [seed for seed in config.seeds if seed not in done],
                    "train_seconds": statistics.mean(evaluations[(name, s)]["train_seconds"] for s in done),
                    "train_cpu_seconds": statistics.mean(
                        evaluations[(name, s)].get("train_cpu_seconds", 0.0) for s in done
                    ),
                }
            )
        tables[table] = {"title": title, "rows": table_rows}
    first: dict[str, Any] = next(iter(evaluations.values()), {"references": {}})
    return {
        "pending": [f"{run.name} seed {run.seed}" for run in runs if (run.name, run.seed) not in evaluations],
        "config": dataclasses.asdict(config),
        "sets": {
            kind: _set_samples(folder)
            for kind in (*DEMO_SETS, "truth-val", *TRUTH_TEST_SETS)
            if (folder := data / kind).exists()
        },
        "keep_rate": read_keep_rates(data),
        "references": first["references"],
        "tables": tables,
        "seconds_last_worker": round(seconds, 1),
    }


def _not_run(config: ResultsConfig, row: Row, data: Path) -> str:
    wanted = round((config.train_samples or 0) * row.train_fraction)
    return f"needs {wanted} training samples; {data / 'train'} holds {_set_samples(data / 'train')}"


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def results_markdown(report: dict[str, Any]) -> str:
    """The tables as markdown: ours as mean ± std over seeds [mean 95 % interval], the paper's beside them,
    then the floors, ceilings and references of every test set."""
    from groundiff.evaluation.evaluate import REFERENCE_LABELS, format_miou

    config, sets = report["config"], report["sets"]
    seeds = ",".join(str(s) for s in config["seeds"])
    source = f"--data {config['data']}" if config.get("data") else f"--size {config['size']:g}"
    lines = [
        f"Command: `groundiff results {source} --seeds {seeds} --threads {config.get('threads')}`"
        f" (data seed {config['data_seed']}); sets: {', '.join(f'{k} {v}' for k, v in sets.items())} samples;"
        f" keep rate {', '.join(f'{k} {v:.2f}' for k, v in report['keep_rate'].items())}.",
        "",
    ]
    if report["pending"]:
        lines += [f"Partial report: still running {', '.join(report['pending'])}.", ""]
    for table in report["tables"].values():
        run = [row for row in table["rows"] if "mean" in row]
        kinds = list(run[0]["mean"]) if run else []
        lines += [f"### {table['title']}", "", _table_header(kinds), _table_rule(kinds)]
        lines += [_table_line(row, kinds) for row in table["rows"]]
        lines.append("")
    references = report["references"]
    kinds = [k for k in SET_LABELS if k in references]
    lines += [
        "### Floors, ceilings and training-free references (seed-independent)",
        "",
        "| | " + " | ".join(SET_LABELS.get(k, k) for k in kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for key, label in REFERENCE_LABELS.items():
        cells = [format_miou(references[k][key]) if key in references[k] else "–" for k in kinds]
        if any(cell != "–" for cell in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _table_header(kinds: list[str]) -> str:
    ours = " | ".join(SET_LABELS[k] for k in kinds)
    paper = " | ".join(f"paper {SET_LABELS[k]}" for k in TEST_SETS)
    return f"| row | {ours} | {paper} | train s |"


def _table_rule(kinds: list[str]) -> str:
    return "|---" * (2 + len(kinds) + len(TEST_SETS)) + "|"


def _seeds_cell(row: dict[str, Any], kind: str) -> str:
    """`mean ± std [mean interval]` over the row's seeds; no ± for one seed, whose spread is unknown; `–` for a
    set the row is not scored on (the top-quality rows filter generated sets only: truth sets have no scores)."""
    if kind not in row["mean"]:
        return "–"
    spread = f" ± {row['std'][kind]:.1f}" if len(row["per_seed"]) > 1 else ""
    low, high = row["ci95_mean"][kind]
    return f"{row['mean'][kind]:.1f}{spread} [{low:.1f}, {high:.1f}]"


def _table_line(row: dict[str, Any], kinds: list[str]) -> str:
    if "not_run" in row:
        return f"| {row['label']} | not run: {row['not_run']} |" + " |" * (len(kinds) + len(TEST_SETS))
    if "mean" not in row:
        seeds = ",".join(map(str, row["pending_seeds"]))
        return f"| {row['label']} | running (seeds {seeds}) |" + " |" * (len(kinds) + len(TEST_SETS))
    ours = " | ".join(_seeds_cell(row, k) for k in kinds)
    paper = " | ".join("–" if row["paper"][k] is None else f"{row['paper'][k]:.2f}" for k in TEST_SETS)
    label = row["label"]
    if row["pending_seeds"]:
        label += f" ({len(row['per_seed'])} of {len(row['per_seed']) + len(row['pending_seeds'])} seeds so far)"
    return f"| {label} | {ours} | {paper} | {row['train_seconds']:.0f} |"

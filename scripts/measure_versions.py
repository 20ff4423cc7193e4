"""docs/results/model_versions.json: the paper's Tables 5-7 on the mini world's U-Net versions.

    OMP_NUM_THREADS=1 python scripts/measure_versions.py --work <folder> --models miniworld,miniworld-ft \\
        --stages generate,train          # per model, as cores free up; every stage resumes
    OMP_NUM_THREADS=1 python scripts/measure_versions.py --work <folder> --stages evaluate

For each diffusion model: a training set, a validation set and the three test sets generated with the
same seeds, settings and labeler (the paper's setup: 1k / 200 / 200; here the test sets are larger), and
truth sets (renders with exact masks, read by that model's U-Net). A grounding model is trained on each
model's set with the shipped recipe, then every grounding model is scored on every model's test sets
(`evaluate --cross-model`): the train-on × test-on matrix, with the floor (predict every pixel) and the
ceiling beside each cell. Per model also: keep rate, CLIP-IQA mean of the training set (Table 7) and the
U-Net's training step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from groundiff.cli import main as groundiff
from groundiff.data.manifest import read_manifest
from groundiff.evaluation.evaluate import evaluate_checkpoint
from result_files import score_row, write_results

REPOSITORY = Path(__file__).resolve().parents[1]
RECIPE = REPOSITORY / "src/groundiff/configs/models/miniworld-grounding.yaml"
TEST_KINDS = ("test-seen", "test-mixed", "test-unseen")
# The paper's numbers (PAPER.txt, section 4.6.2), beside ours in the docs.
PAPER = {
    "table5": {"sd15": [67.96, 51.61, 41.90], "sd2": [66.40, 48.04, 39.20]},
    "table6": {  # trained on → tested on; "standard" is SD 1.5, "high_quality" its fine-tune
        "standard": {"standard": [67.96, 51.61, 41.90], "high_quality": [68.24, 50.95, 35.63]},
        "high_quality": {"standard": [65.07, 49.63, 42.31], "high_quality": [70.98, 57.15, 44.74]},
    },
    "table7": {"standard": 70.34, "high_quality": 75.50},  # CLIP-IQA+ of the 1k training sets
    "columns": ["seen", "seen+unseen", "unseen"],
}


def _generate(work: Path, model: str, sizes: dict[str, int]) -> None:
    for kind, count in sizes.items():
        common = ["--model", model, "--set", kind, "--num-samples", str(count), "--seed", "0", "--progress", "false"]
        common += ["--attention-maps", "false"]
        groundiff(["generate", *common, "--out", str(work / model / kind)])
        if kind.startswith("test-"):  # the same renders' exact masks, read by this model's U-Net
            groundiff(["truth-set", *common, "--out", str(work / model / f"truth-{kind}")])


def _train(work: Path, model: str, epochs: int, samples: int) -> None:
    run = work / model / "run"
    resume = ["--resume"] if (run / "last").exists() else []
    folders = ["--train", str(work / model / "train"), "--val", str(work / model / "val"), "--out", str(run)]
    limits = ["--epochs", str(epochs), "--max-train-samples", str(samples)]
    groundiff(["train", "--config", str(RECIPE), *folders, *limits, "--progress", "false", *resume])


def _model_facts(work: Path, model: str) -> dict[str, Any]:
    from groundiff.miniworld.versions import version_named

    version = version_named(model)
    step = json.loads((REPOSITORY / f"src/groundiff/miniworld/checkpoints/{version.part}.json").read_text())["step"]
    train = read_manifest(work / model / "train")
    kept = {kind: read_manifest(work / model / kind) for kind in ("train", "val", *TEST_KINDS)}
    return {
        "unet_step": step,
        "architecture": version.architecture,
        "prediction_type": version.prediction_type,
        "style": version.style,
        "start": version.start,
        "iqa_mean": train["iqa_mean"],
        "keep_rate": {k: m["samples"] / (m["samples"] + m["discarded"]) for k, m in kept.items()},
    }


def _evaluate(work: Path, models: list[str], trained_models: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for trained in trained_models:
        checkpoint = work / trained / "run" / "best"
        cells: dict[str, Any] = {}
        for tested in models:
            folders = [work / tested / kind for kind in TEST_KINDS]
            folders += [work / tested / f"truth-{kind}" for kind in TEST_KINDS]
            out = work / "evaluations" / f"{trained}--on--{tested}.json"
            if not out.exists():  # a cell measured before (the runs finish at different times) is read back
                evaluate_checkpoint(checkpoint, folders, out, cross_model=True)
            cells[tested] = {kind: score_row(result) for kind, result in json.loads(out.read_text()).items()}
            print(trained, "on", tested, {k: round(v["miou"], 1) for k, v in cells[tested].items()}, flush=True)
        results[trained] = {**_model_facts(work, trained), "tested_on": cells}
    return results


def table_rows(models: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The docs' tables: the matrix on generated sets (labeler masks) and on truth sets (exact masks), one row
    per (trained on, tested on); and one row per model with its U-Net, keep rate and CLIP-IQA (Table 7)."""

    def matrix(prefix: str) -> list[dict[str, Any]]:
        return [
            {"trained_on": trained, "tested_on": tested, **{kind: cells[f"{prefix}{kind}"] for kind in TEST_KINDS}}
            for trained, model in models.items()
            for tested, cells in model["tested_on"].items()
        ]

    facts = [{"model": name, **{k: v for k, v in model.items() if k != "tested_on"}} for name, model in models.items()]
    return {"generated": matrix(""), "truth": matrix("truth-"), "models": facts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder of the sets and runs")
    parser.add_argument("--models", default="miniworld,miniworld-ft,miniworld-v2")
    parser.add_argument("--stages", default="generate,train,evaluate")
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--val-samples", type=int, default=200)
    parser.add_argument("--test-samples", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=8, help="the paper trains 10 epochs for these tables")
    parser.add_argument("--trained", default=None, help="evaluate: only these grounding models (default: --models)")
    parser.add_argument("--kinds", default=None, help="generate only these sets (e.g. train), to split the work")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/results/model_versions.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = args.models.split(",")
    stages = args.stages.split(",")
    sizes = {"train": args.train_samples, "val": args.val_samples, **dict.fromkeys(TEST_KINDS, args.test_samples)}
    chosen = {k: v for k, v in sizes.items() if args.kinds is None or k in args.kinds.split(",")}
    for model in models:
        if "generate" in stages:
            _generate(args.work, model, chosen)
        if "train" in stages:
            _train(args.work, model, args.epochs, args.train_samples)
    if "evaluate" in stages:
        trained = args.trained.split(",") if args.trained else models
        results = _evaluate(args.work, models, trained)
        write_results(
            args.out, results, table_rows, update=False, seed=0, threads=1, paper=PAPER, sizes=sizes, epochs=args.epochs
        )


if __name__ == "__main__":
    main()

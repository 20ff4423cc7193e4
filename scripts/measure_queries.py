"""docs/results/queries.json: how grounding models answer absent objects, and how much their masks overlap.

    OMP_NUM_THREADS=1 python scripts/measure_queries.py --bench <bench> \\
        --models "shipped=src/groundiff/miniworld/weights/grounding,negatives=runs/negatives/best"

For every model and every test set of the bench (generated sets against the labeler, truth sets
against exact masks): the usual mIoU (present objects only); the gRefCOCO figures when each image
is also asked for one class of the same set that it does not contain (N-acc, T-acc, and the mIoU of
the present queries asked beside it, and as a ceiling the best answer rule on the set itself at
T-acc >= 98; `groundiff.evaluation.absent`); and the pixels two objects both claim, for pairs that
share a word and the rest (`groundiff.evaluation.overlap`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from groundiff.data import GroundingDataset
from groundiff.data.batching import ClassEmbedder
from groundiff.data.sets import open_set
from groundiff.evaluation.absent import evaluate_absent_queries, set_classes
from groundiff.evaluation.evaluate import evaluate_dataset, set_kind
from groundiff.evaluation.overlap import evaluate_overlap
from groundiff.model.answers import answer_rule
from groundiff.model.checkpoint import load_grounding_model
from groundiff.sd.pipelines import load_text_components
from result_files import write_results

REPOSITORY = Path(__file__).resolve().parents[1]
SETS = ("test-seen", "test-mixed", "test-unseen", "truth-test-seen", "truth-test-mixed", "truth-test-unseen")
SEED = 0
# The T-acc target: each set also records the best rule on itself at this T-acc (a ceiling).
CEILING_T_ACC = 98.0


def measure_model(checkpoint: Path, bench: Path, sets: list[str]) -> dict[str, Any]:
    model, meta = load_grounding_model(checkpoint)
    embedder = ClassEmbedder.for_checkpoint(meta, *load_text_components(meta.text_model))
    rows: dict[str, Any] = {}
    for name in sets:
        folder = bench / name
        dataset = open_set(str(folder))
        pool = set_classes(GroundingDataset([folder], features=False))
        present_only = evaluate_dataset(model, dataset, embedder)
        absent = evaluate_absent_queries(model, dataset, embedder, pool, seed=SEED, ceiling_t_acc=CEILING_T_ACC)
        rows[set_kind(folder)] = {
            "miou": present_only["miou"],
            "miou_ci95": present_only["miou_ci95"],
            "absent": {key: value for key, value in absent.items() if key not in ("per_class", "pool")},
            "overlap": evaluate_overlap(model, dataset, embedder),
        }
    return {
        "checkpoint": str(checkpoint),
        "presence_head": model.presence_head is not None,
        "negative_fraction": meta.train_config.get("negative_fraction", 0.0),
        "hard_negatives": meta.train_config.get("hard_negatives", 0.0),
        "negatives_per_sample": meta.train_config.get("negatives_per_sample", 1),
        "mine_negatives": meta.train_config.get("mine_negatives", False),  # negatives the model paints most
        "train_seed": meta.train_config.get("seed"),  # so that replicate runs of one recipe can be told apart
        "run_epochs": meta.train_config.get("epochs"),  # the run's length; best_epoch is the one kept
        "presence_inputs": meta.model_config.get("presence_inputs", "statistics") if model.presence_head else None,
        "class_queries": model.config.class_queries,  # one query per class (mean) or per name token
        "word_loss": meta.train_config.get("word_loss", 0.0),  # token queries taught their words' objects
        "val_miou": meta.val.get("miou"),
        "answer_rule": {  # `groundiff tune-answers`: chosen on a validation set, or the defaults
            **answer_rule(model.config),
            "tuned_on": meta.val.get("answer_rule", {}).get("set"),
            "validation": meta.val.get("answer_rule"),  # every rule tried there, with its N-acc and T-acc
        },
        "template": meta.template,
        "subtract_others": meta.subtract_others,
        "best_epoch": meta.epoch,
        "sets": rows,
    }


def table_rows(models: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows for the docs' tables: absent queries and overlap, per (model, truth set)."""
    absent, overlap = [], []
    for name, model in models.items():
        for kind, row in model["sets"].items():
            if not kind.startswith("truth-"):
                continue
            absent.append({"model": name, "set": kind, "miou": row["miou"], "absent": row["absent"]})
            groups = row["overlap"]
            overlap.append(
                {"model": name, "set": kind, "share": groups["share a word"], "rest": groups["share no word"]}
            )
    return {"absent": absent, "overlap": overlap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="folder with the test and truth-test sets")
    parser.add_argument("--models", required=True, help="name=checkpoint,... (first: the baseline)")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/results/queries.json")
    parser.add_argument("--update", action="store_true", help="keep the other models already in --out")
    parser.add_argument("--sets", default=",".join(SETS), help="which of the bench's test sets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = dict(item.split("=", 1) for item in args.models.split(","))
    results: dict[str, Any] = {}
    for name, checkpoint in models.items():
        start = time.perf_counter()
        results[name] = measure_model(Path(checkpoint), args.bench, args.sets.split(","))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    write_results(args.out, results, table_rows, update=args.update, seed=SEED, threads=1, bench=str(args.bench))


if __name__ == "__main__":
    main()

"""docs/results/object_counts.json: mIoU by the number of objects per image, on renders with exact masks.

    OMP_NUM_THREADS=1 python scripts/measure_object_counts.py --sets <folder> --bench <bench> \\
        --models "shipped=src/groundiff/miniworld/weights/grounding"   # --update adds models to the file

`<folder>` holds truth sets made by `groundiff truth-set --objects-per-prompt N --num-samples 300`
named `truth-{kind}-n{N}` for N = 1, 3, 4; the bench's own truth sets (1,000 renders) are N = 2
(without `--bench`, `<folder>` holds N = 2 too: a U-Net version other than the bench's has its own
sets). Each model is scored with `evaluate_checkpoint` beside its floor (predict every pixel) and ceiling.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from groundiff.data.manifest import read_manifest
from groundiff.evaluation.evaluate import evaluate_checkpoint
from groundiff.model.checkpoint import load_checkpoint_meta
from result_files import score_row, write_results

REPOSITORY = Path(__file__).resolve().parents[1]
KINDS = ("test-seen", "test-unseen")


def table_rows(models: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, object count), for the docs' table."""
    return [
        {"model": name, "objects": int(count), **{kind: row[kind] for kind in ("test-seen", "test-unseen")}}
        for name, model in models.items()
        for count, row in model["objects"].items()
    ]


def training_set(checkpoint: Path) -> dict[str, Any]:
    """The model's training set as its manifest tells it: the U-Net that drew it, objects per prompt, and how
    many samples the labeler kept and discarded (a prompt's sample is discarded when a named object is missing)."""
    meta = load_checkpoint_meta(checkpoint)
    folder = Path(meta.train_config["train"])
    manifest = read_manifest(folder) if (folder / "manifest.json").exists() else {}
    kept, discarded = manifest.get("samples"), manifest.get("discarded")
    return {
        "folder": str(folder),
        "model": meta.set_config.get("model"),
        "objects_per_prompt": [
            meta.set_config.get("objects_per_prompt"),
            meta.set_config.get("max_objects_per_prompt"),
        ],
        "samples_used": meta.train_config.get("max_train_samples") or kept,
        "kept": kept,
        "discarded": discarded,
        "keep_rate": kept / (kept + discarded) if kept is not None and discarded is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", type=Path, required=True, help="folder of truth-{kind}-n{N} sets")
    parser.add_argument("--bench", type=Path, default=None, help="the bench (its truth-{kind} sets are N = 2)")
    parser.add_argument("--models", required=True, help="name=checkpoint,...")
    parser.add_argument("--counts", default="1,2,3,4")
    parser.add_argument("--work", type=Path, default=Path("runs/object-counts"))
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/results/object_counts.json")
    parser.add_argument("--update", action="store_true", help="keep the other models already in --out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models: dict[str, Any] = {}
    for name, checkpoint in (item.split("=", 1) for item in args.models.split(",")):
        rows: dict[str, Any] = {}
        for count in (int(c) for c in args.counts.split(",")):
            folders = [
                args.bench / f"truth-{kind}" if count == 2 and args.bench else args.sets / f"truth-{kind}-n{count}"
                for kind in KINDS
            ]
            report = evaluate_checkpoint(Path(checkpoint), folders, args.work / name / f"n{count}.json")
            results = report.results.items()
            rows[str(count)] = {kind.removeprefix("truth-"): score_row(result) for kind, result in results}
            print(name, count, {k: round(v["miou"], 1) for k, v in rows[str(count)].items()}, flush=True)
        models[name] = {"checkpoint": checkpoint, "objects": rows, "train_set": training_set(Path(checkpoint))}
    write_results(args.out, models, table_rows, update=args.update, seed=0, threads=1)


if __name__ == "__main__":
    main()

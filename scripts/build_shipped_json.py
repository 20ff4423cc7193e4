"""docs/results/shipped_grounding.json: the shipped mini-world grounding checkpoint, evaluated on the bench.

    OMP_NUM_THREADS=1 python scripts/build_shipped_json.py --bench /work/paper/bench-quarter \\
        --run /work/paper/shipped/run --full-width /work/paper/results-quarter/runs/table2-improved-frac0.25-seed0

Scores `src/groundiff/miniworld/weights/grounding` (as shipped, float16 weights) on the bench's generated
test sets (against the labeler) and truth sets (against exact masks), and records its size, its training
run (from `--run`: its history) and, for comparison, the full-width improved model of Table 2 (seed 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

from groundiff.evaluation.evaluate import evaluate_checkpoint
from groundiff.miniworld.weights import GROUNDING_DIR
from groundiff.model.checkpoint import load_grounding_model

SETS = ("test-seen", "test-mixed", "test-unseen", "truth-test-seen", "truth-test-mixed", "truth-test-unseen")
REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="folder holding the bench's test and truth sets")
    parser.add_argument("--run", type=Path, required=True, help="the `groundiff train` run the checkpoint came from")
    parser.add_argument("--full-width", type=Path, required=True, help="Table 2's improved seed-0 run folder")
    parser.add_argument("--work", type=Path, default=Path("shipped-evaluation"), help="evaluation JSON and pictures")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/results/shipped_grounding.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    report = evaluate_checkpoint(GROUNDING_DIR, [args.bench / kind for kind in SETS], args.work / "evaluation.json")
    model, meta = load_grounding_model(GROUNDING_DIR)
    history = list(csv.DictReader((args.run / "history.csv").open()))
    best = max(history, key=lambda row: float(row["val_miou"]))
    full_width = json.loads((args.full_width / "evaluation.json").read_text())["all"]
    document = {
        "command": " ".join(["python", *sys.argv]),
        "threads": 1,
        "seed": meta.train_config["seed"],
        "evaluation_seconds": round(time.perf_counter() - start, 1),
        "checkpoint": {
            "megabytes": (GROUNDING_DIR / "model.safetensors").stat().st_size / 1e6,
            "parameters_millions": sum(p.numel() for p in model.parameters()) / 1e6,
            "model_config": meta.model_config,
            "train_samples": int(history[0]["samples"]),
            "epochs": len(history),
            "best_epoch": int(best["epoch"]),
            "val_miou": round(float(best["val_miou"]), 2),
            # One thread beside other jobs on 2 cores: wall time is close to, and bounds, the CPU time.
            "train_wall_minutes": round(sum(float(row["seconds"]) for row in history) / 60, 1),
        },
        "evaluation": {
            kind: {
                "miou": round(row["miou"], 2),
                "miou_ci95": [round(b, 2) for b in row["miou_ci95"]],
                "classes_covered": row["classes_covered"],
                "samples": row["samples"],
                "target": row["target"],
                "references": {name: round(ref["miou"], 2) for name, ref in row["references"].items()},
            }
            for kind, row in report.results.items()
        },
        "full_width": {kind: round(full_width[kind]["miou"], 2) for kind in SETS},
        "full_width_note": "Table 2's improved row, seed 0: width 512, batch 1, 10 epochs, the same training set",
    }
    args.out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

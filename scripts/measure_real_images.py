"""docs/results/real_images.json: grounding images the pipeline never drew, across noise steps.

    OMP_NUM_THREADS=1 python scripts/measure_real_images.py --work runs/real-images --generated <bench>

For each noise step, renders the mini world's truth sets (seen / mixed / unseen; exact masks) and reads
their features as `groundiff ground --image` does (VAE encode, noise to that step's timestep, one U-Net
pass with the generation prompt), then scores the shipped checkpoint on them against the exact masks.
Beside them: the same checkpoint on the bench's generated test sets (`--generated`), against the labeler.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from groundiff.evaluation.evaluate import evaluate_checkpoint
from groundiff.miniworld.truth import TruthSetConfig, make_truth_set
from groundiff.miniworld.weights import GROUNDING_DIR
from groundiff.sd.pipelines import load_pipeline

REPOSITORY = Path(__file__).resolve().parents[1]
KINDS = ("test-seen", "test-mixed", "test-unseen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--generated", type=Path, required=True, help="folder with the generated test sets")
    parser.add_argument("--noise-steps", default="-1,-2,-4,-8", help="denoising steps of a 20-step run")
    parser.add_argument("--samples", type=int, default=1000, help="renders per truth set")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/results/real_images.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline("miniworld")

    rows = {}
    for noise_step in (int(s) for s in args.noise_steps.split(",")):
        start = time.perf_counter()
        folders = [
            make_truth_set(
                TruthSetConfig(
                    out=str(args.work / f"noise{noise_step}" / f"truth-{kind}"),
                    set=kind,
                    num_samples=args.samples,
                    noise_step=noise_step,
                    attention_maps=False,
                    progress=False,
                ),
                pipe=pipe,
            )
            for kind in KINDS
        ]
        report = evaluate_checkpoint(GROUNDING_DIR, folders, args.work / f"noise{noise_step}" / "evaluation.json")
        rows[str(noise_step)] = {kind: _row(result) for kind, result in report.results.items()}
        print(f"noise step {noise_step}: {time.perf_counter() - start:.0f} s", flush=True)
    generated = evaluate_checkpoint(
        GROUNDING_DIR, [args.generated / kind for kind in KINDS], args.work / "generated" / "evaluation.json"
    )
    best = max(rows, key=lambda step: sum(rows[step][f"truth-{kind}"]["miou"] for kind in KINDS))
    document = {
        "command": " ".join(["python", *sys.argv]),
        "threads": 1,
        "seed": 0,
        "checkpoint": "the shipped mini-world checkpoint (src/groundiff/miniworld/weights/grounding)",
        "steps": 20,
        "samples": args.samples,
        "noise_steps": rows,
        "generated": {kind: _row(result) for kind, result in generated.results.items()},
        "best_noise_step": int(best),
    }
    args.out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}; best noise step {best}")


def _row(result: dict) -> dict:
    return {
        "miou": round(result["miou"], 2),
        "miou_ci95": [round(b, 2) for b in result["miou_ci95"]],
        "samples": result["samples"],
        "target": result["target"],
        "predict_everything": round(result["references"]["predict_everything"]["miou"], 2),
        "oracle": round(result["references"]["oracle"]["miou"], 2),
    }


if __name__ == "__main__":
    main()

"""docs/results/e2e_floors.json: the runs behind the floors of tests/test_end_to_end.py.

    python scripts/measure_e2e_floors.py --work runs/e2e            # seeds 0, 1, 2, then the counter-check

Runs `groundiff demo --size 0.25` (the test's configuration, default threads) for each seed, and the
test's counter-check (seed 0's data, every image's features swapped for the next image's). The floors
are two thirds of the lowest mIoU over the seeds, per set; copy them into MIOU_FLOORS of the test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "tests"))

import groundiff.data.sets  # noqa: E402
import groundiff.training.loop  # noqa: E402
from groundiff.apps.demo import DEMO_SET_SIZES, run_demo  # noqa: E402
from test_end_to_end import E2E_SIZE, KEEP_RATE_FLOOR, _demo_config, _SwappedFeatures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the demo runs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/results/e2e_floors.json")
    args = parser.parse_args()

    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        config = _demo_config(args.work / f"e2e-seed{seed}")
        config.seed = seed
        report = run_demo(config)
        runs.append(
            {
                "seed": seed,
                "threads": report["config"]["threads"],
                "miou": report["miou"],
                "miou_ci95": report["miou_ci95"],
                "predict_everything": {k: v["predict_everything"] for k, v in report["references"].items()},
                "cross_attention": {k: v["cross_attention"] for k, v in report["references"].items()},
                "keep_rate": report["keep_rate"],
                "labeler_miou": report["labeler_miou"],
                "wall_seconds": round(time.perf_counter() - start),
            }
        )
        print(f"seed {seed}: {report['miou']}", flush=True)
    floors = {kind: math.floor(2 / 3 * min(run["miou"][kind] for run in runs)) for kind in runs[0]["miou"]}
    document = {
        "description": "The groundiff demo --size 0.25 runs behind the floors of tests/test_end_to_end.py, the floors "
        "(two thirds of the lowest run, per set), and the swapped-features counter-check.",
        "command": " ".join(["python", *sys.argv]),
        "demo_command": f"groundiff demo --size {E2E_SIZE} --seed S --progress false",
        "size": E2E_SIZE,
        "sets": {kind: max(4, round(n * E2E_SIZE)) for kind, n in DEMO_SET_SIZES.items()},
        "runs": runs,
        "floors": {"rule": "two thirds of the lowest seed, rounded down", "miou": floors, "keep_rate": KEEP_RATE_FLOOR},
        "lowest_margin_over_predict_everything": round(
            min(r["miou"][k] - r["predict_everything"][k] for r in runs for k in r["miou"]), 1
        ),
        "lowest_margin_over_cross_attention_unseen": round(
            min(r["miou"]["test-unseen"] - r["cross_attention"]["test-unseen"] for r in runs), 1
        ),
        "swapped_features": _swapped_features(args.work, runs[0]["seed"]),
    }
    args.out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}; floors {floors}")


def _swapped_features(work: Path, seed: int) -> dict[str, object]:
    """The test's counter-check: seed `seed`'s data, features of image i+1 trained and evaluated as image i's."""
    folder = work / f"e2e-seed{seed}-swapped"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data").exists():
        (folder / "data").symlink_to((work / f"e2e-seed{seed}" / "data").resolve(), target_is_directory=True)
    real_open_set = groundiff.data.sets.open_set
    groundiff.training.loop.open_set = lambda *a, **k: _SwappedFeatures(real_open_set(*a, **k))  # type: ignore[assignment]
    try:
        config = _demo_config(folder)
        config.seed = seed
        report = run_demo(config, labeler_miou=100.0)
    finally:
        groundiff.training.loop.open_set = real_open_set  # type: ignore[assignment]
    return {"seed": seed, "miou": report["miou"]}


if __name__ == "__main__":
    main()

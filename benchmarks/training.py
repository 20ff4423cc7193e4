"""Training throughput and the share of step time spent waiting for data.

    python -m benchmarks.training [--samples 64] [--epochs 1] [--json OUT.json]

Generates a small train/val pair with the tiny SD 1.x pipeline (stub labeler), then trains the
reference-size grounding model (17 M parameters in the SD 1.5 layout; here on the tiny layout) for
each batch size, reading features from the shards as a real run does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from groundiff.data.vocabulary import VOC_SPLIT1
from groundiff.environment import environment_report
from groundiff.generation import GenerateConfig, generate_set
from groundiff.sd import tiny as testing
from groundiff.training.config import TrainConfig
from groundiff.training.loop import train


def make_sets(root: Path, samples: int) -> tuple[Path, Path]:
    pipe = testing.tiny_pipeline("sd1")
    labeler = testing.StubLabeler(VOC_SPLIT1.classes)
    for kind, size in (("train", samples), ("val", max(4, samples // 8))):
        config = GenerateConfig(
            out=str(root / kind),
            set=kind,
            model="tiny-sd1",
            labeler="stub",
            scorer="none",
            num_samples=size,
            steps=2,
            progress=False,
        )
        generate_set(config, pipe=pipe, labeler=labeler)
    return root / "train", root / "val"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"environment": environment_report(), "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        train_set, val_set = make_sets(Path(folder), args.samples)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            config = TrainConfig(
                train=str(train_set),
                val=str(val_set),
                out=str(Path(folder) / f"run-b{batch_size}"),
                epochs=args.epochs,
                batch_size=batch_size,
                progress=False,
            )
            report = train(config)
            row = {
                "batch_size": batch_size,
                "samples_per_s": report.samples_per_s,
                "data_wait_fraction": report.data_wait_fraction,
            }
            results["rows"].append(row)
    print(f"Training the reference-size grounding model on tiny-sd1 features, {args.samples} samples, 1 process")
    for row in results["rows"]:
        print(
            f"  batch {row['batch_size']:>2}: {row['samples_per_s']:6.1f} samples/s, "
            f"{row['data_wait_fraction']:5.1%} of the time waiting for data"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

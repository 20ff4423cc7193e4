"""Measure the downstream test (docs/RESULTS.md, "Synthesized datasets"): a segmenter per label source.

Runs `groundiff downstream` with the given flags (see `groundiff downstream --help`), then writes
docs/results/downstream.json (the run's report with the command, seed, thread count and wall time)
and docs/downstream_samples.png (synthesized samples with their masks). Resumable: run it again
with the same flags after a stop.

    nice -n 10 python scripts/measure_downstream.py --out /work/paper/downstream --threads 1
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from groundiff.apps.downstream import DownstreamConfig, run_downstream, samples_picture
from groundiff.cli import build_parser
from groundiff.config import build_config
from groundiff.files import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT = REPO_ROOT / "docs" / "results" / "downstream.json"
PICTURE = REPO_ROOT / "docs" / "downstream_samples.png"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(["downstream", *argv])
    config = build_config(DownstreamConfig, args.config, args)
    start, cpu_start = time.perf_counter(), time.process_time()
    report = run_downstream(config)
    report["command"] = "python scripts/measure_downstream.py " + shlex.join(argv)
    report["seed"] = config.seed
    report["threads"] = config.threads
    report["wall_seconds_this_call"] = time.perf_counter() - start
    report["cpu_seconds_this_call"] = time.process_time() - cpu_start
    write_json_atomic(RESULT, report)
    samples_picture(Path(config.out), PICTURE, model=config.model)
    print(f"wrote {RESULT} and {PICTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

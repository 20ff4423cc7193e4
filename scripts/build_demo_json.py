"""A `groundiff demo` run as a committed result: docs/results/demo_size1_seed0.json (or --out).

    /usr/bin/time -v groundiff demo --out demo-size1 --progress false 2> demo-size1.time
    python scripts/build_demo_json.py --demo demo-size1 --time demo-size1.time --load "alone on 2 cores"

Joins the run's report.json (mIoU, intervals, keep rates, config, seconds) and results.json (every
reference row) with the command, the seed, the thread count, the wall time and what else ran.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, required=True, help="the demo's --out folder")
    parser.add_argument("--time", type=Path, default=None, help="`/usr/bin/time -v` output of the run (CPU use)")
    parser.add_argument("--load", required=True, help="what else ran on the machine meanwhile, in words")
    parser.add_argument("--command", default=None, help="the command as run (default: rebuilt from the config)")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/results/demo_size1_seed0.json")
    args = parser.parse_args()

    report = json.loads((args.demo / "report.json").read_text())
    config = report["config"]
    load = args.load
    if args.time is not None:
        load += f" ({_cpu_use(args.time.read_text())})"
    document = {
        "command": args.command or f"groundiff demo --out {args.demo.name} --progress false",
        "seed": config["seed"],
        "threads": config["threads"],
        "wall_seconds": round(report["seconds"]),
        "load": load,
        "report": report,
        "evaluation": json.loads((args.demo / "results.json").read_text()),
    }
    args.out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: {document['wall_seconds']} s")


def _cpu_use(time_output: str) -> str:
    """User CPU seconds and CPU share from `/usr/bin/time -v`."""
    user = re.search(r"User time \(seconds\): ([\d.]+)", time_output)
    share = re.search(r"Percent of CPU this job got: (\d+)%", time_output)
    if not (user and share):
        raise ValueError("the --time file is no `/usr/bin/time -v` output (no user time or CPU share)")
    return f"/usr/bin/time: {float(user.group(1)):.0f} s user CPU, {share.group(1)} % CPU"


if __name__ == "__main__":
    main()

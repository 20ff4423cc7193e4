"""Writing a measurement script's result JSON: the models measured, the commands that measured them, table rows."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_results(
    out: Path, models: dict[str, Any], rows: Callable[[dict[str, Any]], Any], *, update: bool, **fields: Any
) -> None:
    """Write `out` with `models`, the command line that measured them, `fields` and `rows(models)`.

    With `update`, the models and commands already in `out` are kept (a model measured again replaces
    its entry), as are any other keys it holds, so that one file gathers runs made at different times.
    """
    earlier = json.loads(out.read_text()) if update and out.exists() else {}
    merged = {**earlier.get("models", {}), **models}
    command = "OMP_NUM_THREADS=1 python " + " ".join(sys.argv)
    document = {
        **{key: value for key, value in earlier.items() if key not in ("models", "commands", "rows")},
        "commands": [*earlier.get("commands", []), command],
        **fields,
        "models": merged,
        "rows": rows(merged),
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")


def score_row(result: dict[str, Any]) -> dict[str, Any]:
    """One set's entry of an `evaluate_checkpoint` result, as the docs' tables show it: mIoU with its
    interval, sample count, and the floor (predict every pixel) and ceiling (oracle) beside it."""
    references = result["references"]
    return {
        "miou": result["miou"],
        "miou_ci95": result["miou_ci95"],
        "samples": result["samples"],
        "predict_everything": references["predict_everything"]["miou"],
        "oracle": references["oracle"]["miou"],
    }

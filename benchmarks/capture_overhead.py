"""Capture overhead and captured bytes per sample.

    python -m benchmarks.capture_overhead [--repeats 30] [--steps 10] [--json OUT.json]

1. Wall time of the same tiny-pipeline call (same seed, same settings) with and without feature
   capture, interleaved in one run; the ratio of medians is the capture overhead (target <= 1.05).
2. Captured bytes per sample (one step, fp16) for the tiny architectures and the full-size SD 1.5
   and SD 2 U-Nets, computed from real shapes on the meta device, for both layouts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from groundiff.capture import CaptureConfig, capture_features
from groundiff.capture.sizes import bytes_per_image, feature_shapes
from groundiff.environment import environment_report
from groundiff.sd import architectures
from groundiff.sd import tiny as testing

PROMPT = "a photograph of a dog and a sofa"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def capture_overhead(architecture: str, steps: int, repeats: int) -> dict[str, float]:
    """Median wall times of a plain call and of the same call under `capture_features`, run in pairs."""
    pipe = testing.tiny_pipeline(architecture)

    def plain() -> None:
        pipe([PROMPT], num_inference_steps=steps, generator=[torch.Generator().manual_seed(0)], output_type="np")

    def captured() -> None:
        with capture_features(pipe):
            plain()

    plain(), captured()  # warm-up
    plain_times, capture_times = [], []
    for repeat in range(repeats):
        order = [(plain, plain_times), (captured, capture_times)]
        for fn, times in order if repeat % 2 == 0 else order[::-1]:  # alternate to cancel drift
            times.append(timed(fn))
    # Pairs run back to back share the machine's load: the median of per-pair ratios resists noise
    # from other processes better than a ratio of two medians.
    ratio = statistics.median(c / p for p, c in zip(plain_times, capture_times, strict=True))
    return {"plain_s": statistics.median(plain_times), "capture_s": statistics.median(capture_times), "ratio": ratio}


def storage_rows() -> list[dict[str, object]]:
    """fp16 bytes per sample of one captured step for each architecture and layout."""
    layouts = {
        "tiny-sd1 (32², 16² latents)": (dict(testing.tiny_pipeline("sd1").unet.config), 16),
        "SD 1.5 (512², 64² latents)": (architectures.sd15_unet_config(), 64),
        "SD 2 (768², 96² latents)": (architectures.sd2_unet_config(), 96),
    }
    rows = []
    for name, (config, latent_size) in layouts.items():
        for layout in ("cond", "uncond+cond"):
            shapes = feature_shapes(config, latent_size, CaptureConfig(layout=layout))
            rows.append(
                {"architecture": name, "layout": layout, "mb_fp16": bytes_per_image(shapes, torch.float16) / 1e6}
            )
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, object] = {"environment": environment_report()}
    print(f"Capture overhead, tiny pipelines, {args.steps} steps, {args.repeats} interleaved pairs")
    for architecture in ("sd1", "sd2"):
        row = capture_overhead(architecture, args.steps, args.repeats)
        results[f"overhead_tiny_{architecture}"] = row
        print(
            f"  tiny-{architecture}: plain {row['plain_s'] * 1e3:.1f} ms, with capture {row['capture_s'] * 1e3:.1f} ms,"
            f" median pair ratio {row['ratio']:.3f}"
        )
    print("Captured bytes per sample, all 9 blocks, one step, fp16")
    results["storage"] = storage_rows()
    for row in results["storage"]:  # type: ignore[union-attr]
        print(f"  {row['architecture']:<30} {row['layout']:<12} {row['mb_fp16']:8.3f} MB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()

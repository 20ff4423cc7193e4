"""Dataset generation throughput and storage per sample.

    python -m benchmarks.generation [--model tiny-sd1] [--samples 24] [--steps 10] [--json OUT.json]

1. Samples/s of `generate_set` on one process, three ways in one run: generation + capture only
   (no labeler, nothing kept), + storage (shards on disk), + labeling (the model's own labeler, or
   the stub labeler for the random tiny pipelines), with the share of time in the U-Net, the VAE
   decoder and the labeler.
2. Bytes per sample for each storage layout of the full-size SD 1.5 and SD 2 architectures
   (from real shapes on the meta device) and the bytes the tiny set really used on disk.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundiff.capture import CaptureConfig
from groundiff.capture.sizes import bytes_per_image, feature_shapes
from groundiff.data.vocabulary import VOC_SPLIT1
from groundiff.environment import environment_report
from groundiff.generation import GenerateConfig, generate_set
from groundiff.sd import architectures
from groundiff.sd import tiny as testing
from groundiff.sd.pipelines import load_pipeline


class Stopwatch:
    """Accumulated wall time inside a module's forward, through a pre- and a post-hook."""

    def __init__(self, module: nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        self._handles = [
            module.register_forward_pre_hook(lambda *_: setattr(self, "_start", time.perf_counter())),
            module.register_forward_hook(lambda *_: setattr(self, "seconds", self.seconds + self._elapsed())),
        ]

    def _elapsed(self) -> float:
        return time.perf_counter() - self._start

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class TimedLabeler:
    def __init__(self, labeler: Any) -> None:
        self.inner, self.vocabulary, self.seconds = labeler, labeler.vocabulary, 0.0

    def label(self, images: Any, class_names: Any) -> Any:
        start = time.perf_counter()
        result = self.inner.label(images, class_names)
        self.seconds += time.perf_counter() - start
        return result


def throughput(model: str, samples: int, steps: int, folder: Path) -> list[dict[str, Any]]:
    pipe = load_pipeline(model, device="cpu")
    own_labeler = model == "miniworld"
    if own_labeler:
        from groundiff.labeling.registry import load_labeler

        labeler_name, labeler = "miniworld", load_labeler("miniworld")
    else:
        labeler_name, labeler = "stub", testing.StubLabeler(VOC_SPLIT1.classes)
    base = dict(model=model, steps=steps, num_samples=samples, scorer="none", progress=False, samples_per_shard=50)
    variants = [
        ("generate + capture", dict(labeler="none"), None, True),
        ("+ storage", dict(labeler="none"), None, False),
        (f"+ labeling ({labeler_name})", dict(labeler=labeler_name), TimedLabeler(labeler), False),
    ]
    rows = []
    for name, overrides, timed_labeler, discard_output in variants:
        out = folder / name.replace(" ", "_").replace("+", "").replace("(", "").replace(")", "")
        config = GenerateConfig(out=str(out), set="train", **{**base, **overrides})  # type: ignore[arg-type]
        unet, vae = Stopwatch(pipe.unet), Stopwatch(pipe.vae.decoder)
        start = time.perf_counter()
        report = generate_set(config, pipe=pipe, labeler=timed_labeler)
        seconds = time.perf_counter() - start
        unet.remove(), vae.remove()
        attempts = report.generated + report.discarded
        row = {
            "variant": name,
            "samples_per_s": report.generated / seconds,
            "attempts_per_s": attempts / seconds,
            "attempts": attempts,
            "unet_share": unet.seconds / seconds,
            "vae_decode_share": vae.seconds / seconds,
            "labeler_share": (timed_labeler.seconds / seconds) if timed_labeler else 0.0,
        }
        if not discard_output:
            row["bytes_per_sample"] = json.loads((out / "manifest.json").read_text())["bytes_per_sample"]
        rows.append(row)
    return rows


def storage_layouts() -> list[dict[str, Any]]:
    """MB per sample of the captured U-Net data for each layout (image and masks excluded)."""
    rows = []
    for name, config, latent, text_width in (
        ("SD 1.5 (512²)", architectures.sd15_unet_config(), 64, 768),
        ("SD 2 (768²)", architectures.sd2_unet_config(), 96, 1024),
    ):
        cond = feature_shapes(config, latent)
        both = feature_shapes(config, latent, CaptureConfig(layout="uncond+cond"))
        # U-Net inputs of one step: latents (4, h, w) + conditional and unconditional text (77, D).
        inputs = 4 * latent * latent + 2 * 77 * text_width
        layouts = {
            "maps, both halves, fp32 (reference)": bytes_per_image(both, torch.float32),
            "maps, both halves, fp16": bytes_per_image(both, torch.float16),
            "maps, cond half, fp16": bytes_per_image(cond, torch.float16),
            "maps, cond half, fp16, up2+up3 only": bytes_per_image(
                {k: v for k, v in cond.items() if k in ("up2", "up3")}, torch.float16
            ),
            "unet-input, fp32 pipeline": 4 * inputs,
            "unet-input, fp16 pipeline": 2 * inputs,
        }
        rows += [{"architecture": name, "layout": k, "mb": v / 1e6} for k, v in layouts.items()]
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-sd1", help="tiny-sd1, tiny-sd2, tiny-sdxl or miniworld (CPU-sized)")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"environment": environment_report(), "model": args.model, "steps": args.steps}
    with tempfile.TemporaryDirectory() as folder:
        results["throughput"] = throughput(args.model, args.samples, args.steps, Path(folder))
    print(f"Generation throughput, {args.model}, {args.steps} steps, {args.samples} kept samples, 1 process")
    for row in results["throughput"]:
        size = f"{row['bytes_per_sample'] / 1e3:8.1f} kB/sample" if "bytes_per_sample" in row else " " * 17
        print(
            f"  {row['variant']:<26} {row['samples_per_s']:6.2f} kept/s {row['attempts_per_s']:6.2f} attempts/s {size}"
            f"  U-Net {row['unet_share']:4.0%}"
            f"  VAE decode {row['vae_decode_share']:4.0%}  labeler {row['labeler_share']:4.0%}"
        )
    results["storage"] = storage_layouts()
    print("Captured U-Net data per sample (one step; all 9 blocks unless named)")
    for row in results["storage"]:
        print(f"  {row['architecture']:<14} {row['layout']:<40} {row['mb']:8.2f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

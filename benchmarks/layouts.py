"""Feature layout and bytes per stored sample of the full-size SD 1.5, SD 2 and SDXL U-Nets, from their configs.

    python -m benchmarks.layouts --json docs/results/feature_layouts.json

Each U-Net is built on the meta device (no weights, no download) and run for one step under
`capture_features` at its native size: the shapes are those a real run captures (the default
capture: every block, last step, conditional half). Bytes per sample count one captured step; the
image and masks are left out.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from groundiff.capture import CaptureConfig
from groundiff.capture.sizes import bytes_per_image, feature_shapes, input_shapes
from groundiff.sd import architectures

COMMAND = "python -m benchmarks.layouts --json docs/results/feature_layouts.json"
# Name, U-Net config, native image side, VAE factor.
ARCHITECTURES = (
    ("SD 1.5", architectures.sd15_unet_config(), 512, 8),
    ("SD 2 (768)", architectures.sd2_unet_config(), 768, 8),
    ("SDXL", architectures.sdxl_unet_config(), 1024, 8),
)


def layout(name: str, unet_config: dict[str, Any], image_size: int, vae_factor: int) -> dict[str, Any]:
    """One architecture's captured blocks (C, H, W) and MB per sample in each storage layout."""
    latent = image_size // vae_factor
    cond = feature_shapes(unet_config, latent)
    both = feature_shapes(unet_config, latent, CaptureConfig(layout="uncond+cond"))
    inputs = input_shapes(unet_config, latent)
    return {
        "name": name,
        "image_size": image_size,
        "latent_size": latent,
        "text_width": unet_config["cross_attention_dim"],
        "blocks": [
            {"block": block, "shape": list(shape), "mb_fp16": bytes_per_image({block: shape}, torch.float16) / 1e6}
            for block, shape in cond.items()
        ],
        "levels": sorted({shape[-1] for shape in cond.values()}),
        "mb": {
            "maps_both_fp32": bytes_per_image(both, torch.float32) / 1e6,
            "maps_cond_fp16": bytes_per_image(cond, torch.float16) / 1e6,
            "unet_input_fp16": bytes_per_image(inputs, torch.float16) / 1e6,
        },
        "inputs": {input_name: list(shape) for input_name, shape in inputs.items()},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    results = {
        "command": COMMAND,
        "note": "shapes of the real architectures built on the meta device, one captured step: a computation, "
        "independent of seed and threads",
        "architectures": [layout(*architecture) for architecture in ARCHITECTURES],
    }
    for row in results["architectures"]:
        blocks = ", ".join(f"{b['block']} {'×'.join(map(str, b['shape']))}" for b in row["blocks"])
        print(f"{row['name']} at {row['image_size']}²: {blocks}")
        print("  MB per sample: " + ", ".join(f"{k} {v:.2f}" for k, v in row["mb"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


if __name__ == "__main__":
    main()

"""Full-size SD 1.5 or SDXL generation on one accelerator: capture overhead, images/s, speed-ups, memory, labeler.

    python -m benchmarks.gpu --device cuda --out $OUT/gpu.json          # on a GPU (≤ 8 minutes)
    python -m benchmarks.gpu --model sdxl --device cuda --no-compile --out $OUT/gpu_sdxl.json
                                                # SDXL base: 1024², 30 steps, batches 1 and 4 (≤ 4 minutes)
    python -m benchmarks.gpu --device cpu --dtype float32 --steps 2 --size 128 --batch-sizes 1 \\
        --repeats 1 --no-compile --labeler-images 1                       # CPU smoke test

Every component has the SD 1.5 (or SDXL base) architecture, built from config with random weights:
throughput does not depend on weight values, so no download is needed. Each figure is measured side
by side in one run; the JSON names the device and versions.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from groundiff.capture import capture_features
from groundiff.environment import environment_report
from groundiff.sd.architectures import clip_text_config, sd15_unet_config, sd_ddim_scheduler, sdxl_unet_config
from groundiff.sd.dtypes import parse_dtype
from groundiff.sd.tokenizer import load_clip_tokenizer

PROMPT = "a photograph of a dog and a sofa"
# Per model: the defaults of --steps, --size and --batch-sizes.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd15": {"steps": 50, "size": 512, "batch_sizes": [1, 4, 8, 16]},
    "sdxl": {"steps": 30, "size": 1024, "batch_sizes": [1, 4]},
}


def full_size_pipeline(device: str, dtype: torch.dtype, model: str = "sd15") -> Any:
    """SD 1.5's (or SDXL base's) U-Net, VAE and text encoders with random weights, built on `device`.

    SD 1.5: CLIP ViT-L/14. SDXL: CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 (with its projection, for
    the pooled embedding), the same VAE layout.
    """
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**(sdxl_unet_config() if model == "sdxl" else sd15_unet_config()))
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(clip_text_config(768, layers=12, heads=12))
        if model == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(1280, layers=32, heads=20))
    shared = {"vae": vae, "text_encoder": text_encoder, "tokenizer": load_clip_tokenizer(), "unet": unet}
    pipe: Any
    if model == "sdxl":
        second = {"text_encoder_2": text_encoder_2, "tokenizer_2": shared["tokenizer"]}
        pipe = StableDiffusionXLPipeline(**shared, **second, scheduler=sd_ddim_scheduler(), add_watermarker=False)
    else:
        no_checker = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        pipe = StableDiffusionPipeline(**shared, scheduler=sd_ddim_scheduler(), **no_checker)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def synchronized(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median wall time of `fn` over `repeats` runs after one warm-up."""
    fn()
    synchronized(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronized(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def alternating_seconds(
    first: Callable[[], Any], second: Callable[[], Any], device: str, repeats: int
) -> tuple[float, float]:
    """Median wall times of two calls timed in turn (`first`, `second`, `first`, ...) after a warm-up of each."""
    timed: tuple[list[float], list[float]] = ([], [])
    for round_ in range(repeats + 1):
        for fn, times in zip((first, second), timed, strict=True):
            start = time.perf_counter()
            fn()
            synchronized(device)
            if round_:
                times.append(time.perf_counter() - start)
    return float(np.median(timed[0])), float(np.median(timed[1]))


def call(pipe: Any, batch: int, steps: int, size: int, capture: bool) -> Callable[[], Any]:
    def run() -> Any:
        generators = [torch.Generator().manual_seed(i) for i in range(batch)]
        with capture_features(pipe) if capture else nullcontext():
            return pipe([PROMPT] * batch, num_inference_steps=steps, height=size, width=size, generator=generators)

    return run


def speedup_rows(seconds_per_image: dict[str, float]) -> list[dict[str, Any]]:
    """One row per variant, with its time relative to the first (the default)."""
    default = next(iter(seconds_per_image.values()))
    return [
        {"variant": name, "s_per_image": value, "relative_to_default": value / default}
        for name, value in seconds_per_image.items()
    ]


def measure(args: argparse.Namespace, save: Callable[[dict[str, Any]], None] = lambda _: None) -> dict[str, Any]:
    """Runs every measurement; `save` gets the results so far after each, so a time-out loses only the last."""
    dtype = parse_dtype(args.dtype)
    pipe = full_size_pipeline(args.device, dtype, args.model)
    results: dict[str, Any] = {"environment": environment_report(), "args": vars(args)}
    if args.device.startswith("cuda"):
        results["device_name"] = torch.cuda.get_device_name(0)
        torch.cuda.reset_peak_memory_stats()

    # 1. Capture overhead at batch 1, plain and captured calls alternating so clock drift hits both.
    plain, captured = alternating_seconds(
        call(pipe, 1, args.steps, args.size, capture=False),
        call(pipe, 1, args.steps, args.size, capture=True),
        args.device,
        max(args.repeats, 3),
    )
    results["capture_overhead"] = {"plain_s": plain, "capture_s": captured, "ratio": captured / plain}
    save(results)
    if args.capture_only:
        return results

    # 2. Batched throughput with capture (the dataset-generation path).
    results["batched"] = []
    for batch in args.batch_sizes:
        elapsed = seconds(call(pipe, batch, args.steps, args.size, capture=True), args.device, args.repeats)
        results["batched"].append({"batch": batch, "images_per_s": batch / elapsed, "s_per_image": elapsed / batch})
        save(results)
    if args.device.startswith("cuda"):
        results["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9

    # 3. What each speed-up buys at the largest batch: classic attention, channels_last, torch.compile.
    batch = max(args.batch_sizes)
    variants: dict[str, float] = {"default (SDPA)": results["batched"][-1]["s_per_image"]}
    default_processors = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(AttnProcessor())
    variants["classic attention (no SDPA)"] = (
        seconds(call(pipe, batch, args.steps, args.size, True), args.device, 1) / batch
    )
    pipe.unet.set_attn_processor(default_processors)
    save(results | {"speedups": speedup_rows(variants)})
    pipe.unet.to(memory_format=torch.channels_last)
    variants["channels_last"] = seconds(call(pipe, batch, args.steps, args.size, True), args.device, 1) / batch
    pipe.unet.to(memory_format=torch.contiguous_format)
    save(results | {"speedups": speedup_rows(variants)})
    if args.compile:
        # Blocks are compiled one by one: the capture hooks sit on block outputs, outside the graphs.
        for block in [*pipe.unet.down_blocks, pipe.unet.mid_block, *pipe.unet.up_blocks]:
            block.compile()
        variants["torch.compile per block"] = (
            seconds(call(pipe, batch, args.steps, args.size, True), args.device, 1) / batch
        )
    results["speedups"] = speedup_rows(variants)

    # 4. The labeler: torchvision Mask R-CNN v2 (random weights) on batches of generated-size images.
    from groundiff.labeling.maskrcnn import MaskRCNNConfig, MaskRCNNLabeler, build_maskrcnn

    model = build_maskrcnn("v2", pretrained=False).to(args.device).eval()
    count = args.labeler_images
    labeler = MaskRCNNLabeler(model, config=MaskRCNNConfig(device=args.device, batch_size=count))
    images = np.random.default_rng(0).integers(0, 255, (count, args.size, args.size, 3), dtype=np.uint8)
    labeling = seconds(lambda: labeler.label(images, [["dog", "sofa"]] * count), args.device, 1)
    results["labeler_images_per_s"] = count / labeling
    best = min(row["s_per_image"] for row in results["batched"])
    results["amortized_s_per_sample"] = best + labeling / count
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_DEFAULTS), default="sd15", help="the architecture")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", help="float16, bfloat16 or float32")
    parser.add_argument("--steps", type=int, default=None, help="default: 50 (sd15), 30 (sdxl)")
    parser.add_argument("--size", type=int, default=None, help="default: 512 (sd15), 1024 (sdxl)")
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=None, help="default: 1,4,8,16 / 1,4"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--capture-only", action="store_true", help="measure the capture overhead alone")
    parser.add_argument("--labeler-images", type=int, default=8)
    parser.add_argument("--out", default=None, help="JSON results file")
    args = parser.parse_args(argv)
    for name, value in MODEL_DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    def save(results: dict[str, Any]) -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2, default=str))

    results = measure(args, save)
    save(results)
    print(json.dumps({k: v for k, v in results.items() if k != "environment"}, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()

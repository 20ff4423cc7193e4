"""Measurements of the mini world: labeler mIoU against render ground truth, generator keep rate, sample grid.

`python -m groundiff.miniworld.evaluate [--samples N] [--out DIR]` measures the shipped weights and
writes `metrics.json` and `samples.png` to DIR.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from groundiff.labeling.base import LabelResult
from groundiff.miniworld.labeler import MiniWorldLabeler, class_miou, confusion_iou
from groundiff.miniworld.renderer import render_set
from groundiff.miniworld.vocabulary import CLASSES, SEEN_CLASSES, UNSEEN_CLASSES, make_caption

log = logging.getLogger(__name__)

HELD_OUT_SEED = 20_000_000  # evaluation renders: disjoint from the training (0…) and checkpoint-eval (10M…) seeds
PROMPT_SETS = {
    "seen": (SEEN_CLASSES, SEEN_CLASSES),
    "mixed": (SEEN_CLASSES, UNSEEN_CLASSES),
    "unseen": (UNSEEN_CLASSES,) * 2,
}


def measure_labeler(labeler: MiniWorldLabeler, *, count: int = 1000, first_seed: int = HELD_OUT_SEED) -> dict:
    """mIoU (percent, 20 classes) of the labeler's arg-max maps against exact masks of `count` fresh renders."""
    rendered = render_set(first_seed, count)
    predicted, _ = labeler.predict(rendered.images)
    per_class = confusion_iou(predicted, rendered.labels)[1:] * 100
    return {
        "miou": round(class_miou(predicted, rendered.labels), 2),
        "per_class": {name: round(float(v), 1) for name, v in zip(CLASSES, per_class, strict=True)},
        "count": count,
        "first_seed": first_seed,
    }


def draw_prompt_pairs(split: str, count: int, seed: int) -> list[tuple[str, str]]:
    """`count` class pairs of a split: seen (both seen), mixed (seen then unseen, order shuffled) or unseen."""
    if split not in PROMPT_SETS:
        raise ValueError(f"Unknown split {split!r}; choose one of {', '.join(PROMPT_SETS)}.")
    first, second = PROMPT_SETS[split]
    rng = np.random.default_rng([seed, list(PROMPT_SETS).index(split)])
    pairs: list[tuple[str, str]] = []
    while len(pairs) < count:
        x, y = str(rng.choice(first)), str(rng.choice(second))
        if x != y:
            pairs.append((x, y) if rng.random() < 0.5 else (y, x))
    return pairs


@dataclass
class KeepRate:
    """Generator faithfulness on one prompt split: share of samples where the labeler finds every prompted class."""

    split: str
    samples: int
    keep_rate: float
    found_per_class: dict[str, float]
    seconds: float


def generate_images(pipe, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, guidance: float) -> np.ndarray:  # noqa: ANN001
    """(B, 64, 64, 3) uint8 images of a diffusers pipeline, image i a function of seeds[i] only."""
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    out = pipe(
        list(prompts), num_inference_steps=steps, guidance_scale=guidance, generator=generators, output_type="np"
    )
    return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)


def measure_keep_rate(
    pipe,  # noqa: ANN001
    labeler: MiniWorldLabeler,
    split: str,
    *,
    count: int,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 4.0,
    batch_size: int = 50,
) -> tuple[KeepRate, np.ndarray, list[tuple[str, str]], list[LabelResult]]:
    """Generate `count` two-class prompts of `split`, label them and count the samples the discard rule keeps."""
    pairs = draw_prompt_pairs(split, count, seed)
    prompts = [make_caption(pair) for pair in pairs]
    seeds = [seed * 1_000_000 + i for i in range(count)]
    start = time.time()
    images = np.concatenate(
        [
            generate_images(
                pipe, prompts[i : i + batch_size], seeds[i : i + batch_size], steps=steps, guidance=guidance
            )
            for i in range(0, count, batch_size)
        ]
    )
    results = labeler.label(images, pairs)
    kept = [not result.missing(pair) for pair, result in zip(pairs, results, strict=True)]
    found: dict[str, list[bool]] = {}
    for pair, result in zip(pairs, results, strict=True):
        for name in pair:
            found.setdefault(name, []).append(name in result.masks)
    rate = KeepRate(
        split=split,
        samples=count,
        keep_rate=round(float(np.mean(kept)), 4),
        found_per_class={name: round(float(np.mean(v)), 3) for name, v in sorted(found.items())},
        seconds=round(time.time() - start, 1),
    )
    return rate, images, pairs, results


def save_sample_grid(
    path: Path,
    images: np.ndarray,
    pairs: Sequence[tuple[str, str]],
    results: Sequence[LabelResult],
    *,
    columns: int = 8,
) -> None:
    """A PNG grid: each generated image over its prompt, and beside it the labeler's masks of the prompted classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.25, rows * 1.5), squeeze=False)
    tints = np.array([[1.0, 0.1, 0.6], [0.1, 0.9, 1.0]])
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, pair, result) in enumerate(zip(images, pairs, results, strict=True)):
        row, col = divmod(i, columns)
        overlay = image.astype(np.float32) / 255 * 0.35
        for tint, name in zip(tints, pair, strict=True):
            if name in result.masks:
                overlay[result.masks[name]] = tint
        kept = not result.missing(pair)
        axes[row, 2 * col].imshow(image, interpolation="nearest")
        axes[row, 2 * col].set_title(f"{pair[0]} +\n{pair[1]}", fontsize=6)
        axes[row, 2 * col + 1].imshow(overlay, interpolation="nearest")
        axes[row, 2 * col + 1].set_title("kept" if kept else "discarded", fontsize=6, color="green" if kept else "red")
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    from groundiff.miniworld.weights import load_miniworld_labeler, load_miniworld_pipeline

    parser = argparse.ArgumentParser(prog="python -m groundiff.miniworld.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="generated samples per split")
    parser.add_argument("--labeler-renders", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--splits", default="seen,mixed,unseen")
    parser.add_argument("--out", type=Path, default=Path("runs/miniworld/eval"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    labeler = load_miniworld_labeler()
    metrics: dict = {"labeler": measure_labeler(labeler, count=args.labeler_renders)}
    log.info("labeler mIoU %.2f on %d held-out renders", metrics["labeler"]["miou"], args.labeler_renders)
    pipe = load_miniworld_pipeline()
    grid: list = [[], [], []]
    for split in args.splits.split(","):
        rate, images, pairs, results = measure_keep_rate(
            pipe, labeler, split, count=args.samples, seed=args.seed, steps=args.steps, guidance=args.guidance
        )
        metrics[f"keep_{split}"] = asdict(rate)
        log.info("keep rate %s: %.3f (%d samples, %.0f s)", split, rate.keep_rate, rate.samples, rate.seconds)
        for store, values in zip(grid, (images[:8], pairs[:8], results[:8]), strict=True):
            store.extend(values)
    metrics["settings"] = {"steps": args.steps, "guidance": args.guidance, "seed": args.seed, "samples": args.samples}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_sample_grid(args.out / "samples.png", np.stack(grid[0]), grid[1], grid[2])
    log.info("wrote %s and %s", args.out / "metrics.json", args.out / "samples.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

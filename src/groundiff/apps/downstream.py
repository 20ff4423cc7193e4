"""The downstream test of synthesized data: train an ordinary segmenter on it, test it on real images.

As DatasetDM, DiffuMask and Dataset Diffusion judge their data: a standard semantic segmenter
(torchvision's LR-ASPP MobileNetV3, from scratch) is trained on images of the world's *unseen*
classes, then tested on renders with exact masks (the world's "real images", `truth_set`). Only the
masks differ between the label sources; images, schedule and seed are the same:

- `grounding`: the grounding model's masks (`groundiff synthesize`; ours, no labeler needed);
- `cross_attention`: DAAM's cross-attention maps of the same images, cut at the threshold (and
  rule, plain or argmax) that scores best on a seen-class validation set, as `evaluate` tunes it;
- `labeler`: the world's labeler on the same images (an upper bound: a real long-tail class has none);
- `exact`: as many renders with exact masks (the ceiling: perfect labels on the test's own domain);
- `seen_only`: seen-class images with the labeler's masks (what a user gets without groundiff: a
  segmenter whose label space has no unseen class scores 0 IoU on each by construction; its
  class-agnostic foreground IoU says whether it at least finds the objects).

Every score is the category-wise IoU over the unseen classes with a 95 % bootstrap interval over the
test renders (`evaluation.metrics`), every test image scored for every unseen class, so false
positives count. Legend: N images, K classes, H×W pixels.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from groundiff.config import option

log = logging.getLogger(__name__)

BACKGROUND_WEIGHT = 0.2  # cross-entropy weight of the background class (every object class has 1)
SOURCES = ("grounding", "cross_attention", "labeler", "exact", "seen_only")


@dataclass
class DownstreamConfig:
    """One downstream measurement (`groundiff downstream`). Sets not given are made under `out`."""

    out: str = option("downstream", "folder of the sets, the segmenters' results and downstream.json")
    model: str = option("miniworld", "a world with a labeler, a truth-set renderer and a grounding checkpoint")
    checkpoint: str | None = option(None, "grounding checkpoint; default: the world's shipped one")
    train_images: int = option(600, "synthetic images generated; every source trains on the kept ones")
    test_images: int = option(1000, "test renders of the unseen classes with exact masks")
    val_images: int = option(200, "seen-class validation images that tune the cross-attention threshold")
    val: str | None = option(None, "an existing generated val set with attention maps (default: generated)")
    seen_train: str | None = option(
        None, "an existing seen-class generated set with labeler masks (default: generated)"
    )
    test: str | None = option(None, "an existing truth set of unseen renders (default: rendered)")
    sources: tuple[str, ...] = option(SOURCES, "comma-separated label sources to train on")
    epochs: int = option(8, "segmenter training epochs")
    batch_size: int = option(8, "segmenter batch size")
    learning_rate: float = option(2e-3, "AdamW learning rate (one-cycle schedule)")
    seed: int = option(0, "seed of the sets and of every segmenter")
    threads: int | None = option(1, "torch CPU threads; results repeat for a given seed and thread count")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images", "val_images", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"Unknown label source {unknown[0]!r} in --sources; choose from {', '.join(SOURCES)}.")


@dataclass
class LabelledImages:
    """Training data of one label source: images (N, H, W, 3) uint8, index maps (N, H, W) uint8 (0
    background, k + 1 for `classes[k]`, 255 ignored), the class list, and notes on how the masks were made."""

    images: np.ndarray
    targets: np.ndarray
    classes: list[str]
    notes: dict[str, Any] = field(default_factory=dict)


def index_maps(masks: Sequence[dict[str, np.ndarray]], classes: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
    """(N, H, W) uint8 index maps of per-image masks by class name (`data.export.semantic_index`); an
    image without masks is all background."""
    from groundiff.data.export import semantic_index

    return np.stack([semantic_index(m, classes) if m else np.zeros(shape, np.uint8) for m in masks])


def train_segmenter(data: LabelledImages, config: DownstreamConfig, *, desc: str = "segmenter") -> Any:
    """LR-ASPP MobileNetV3-Large (torchvision, no pretrained weights) trained on `data`: cross-entropy
    ignoring 255, AdamW with a one-cycle schedule, random horizontal flips; seeded by `config.seed`."""
    import torch
    import torch.nn.functional as F
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(data.classes) + 1)
    images = _as_input(data.images)  # (N, 3, H, W)
    targets = torch.from_numpy(data.targets).long()  # (N, H, W)
    count = len(images)
    batch = min(config.batch_size, count)
    steps = count // batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=steps * config.epochs
    )
    generator = torch.Generator().manual_seed(config.seed)
    # Objects cover a few percent of the pixels: background counts less, or a young model predicts only it.
    weight = torch.tensor([BACKGROUND_WEIGHT] + [1.0] * len(data.classes))
    model.train()
    with tqdm(total=steps * config.epochs, desc=desc, unit="batch", disable=not config.progress) as bar:
        for _ in range(config.epochs):
            order = torch.randperm(count, generator=generator)
            for step in range(steps):
                chosen = order[step * batch : (step + 1) * batch]
                x, y = images[chosen], targets[chosen]  # (B, 3, H, W), (B, H, W)
                flip = torch.rand(len(chosen), generator=generator) < 0.5
                x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
                loss = F.cross_entropy(model(x)["out"], y, weight=weight, ignore_index=255)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    _recompute_batch_norm(model, images, batch)
    return model.eval()


def _recompute_batch_norm(model: Any, images: Any, batch: int) -> None:
    """Batch-norm statistics as the plain mean over the training images under the final weights.

    torchvision's MobileNetV3 averages them with momentum 0.01, which a short CPU schedule leaves
    near their initial values, so the model in eval mode would see other activations than it trained on.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the passes below
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(images[start : start + batch])


def _as_input(images: np.ndarray) -> Any:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def score_segmenter(
    model: Any, classes: Sequence[str], test: LabelledImages, *, batch_size: int = 64
) -> dict[str, Any]:
    """Category-wise IoU (percent, 95 % bootstrap interval) over `test.classes` on the test images, every
    image scored for every test class; a test class outside the segmenter's `classes` is never predicted.
    Also `foreground_iou`: objects against background, whatever their class."""
    import torch

    from groundiff.evaluation.evaluate import summarize
    from groundiff.evaluation.metrics import IoUAccumulator

    accumulator = IoUAccumulator()
    column = {name: classes.index(name) + 1 if name in classes else -1 for name in test.classes}
    test_index = torch.tensor([k + 1 for k in range(len(test.classes))])[:, None, None]  # (K, 1, 1)
    own_index = torch.tensor([column[name] for name in test.classes])[:, None, None]  # (K, 1, 1)
    intersection = union = 0
    with torch.no_grad():
        for start in range(0, len(test.images), batch_size):
            predicted = model(_as_input(test.images[start : start + batch_size]))["out"].argmax(1)  # (B, H, W)
            truth = torch.from_numpy(test.targets[start : start + batch_size]).long()  # (B, H, W)
            for pred, target in zip(predicted, truth, strict=True):
                accumulator.update(pred[None] == own_index, target[None] == test_index, list(test.classes))
                objects, found = (target > 0) & (target < 255), pred > 0
                intersection += int((objects & found).sum())
                union += int((objects | found).sum())
    return {**summarize(accumulator), "foreground_iou": 100 * intersection / max(union, 1)}


def run_downstream(config: DownstreamConfig) -> dict[str, Any]:
    """Make the sets, label the synthetic images with every source, train and score one segmenter per
    source; resumable (finished sets and sources are kept under `out`). Returns `downstream.json`."""
    import torch

    from groundiff.files import write_json_atomic
    from groundiff.worlds import get_world

    if config.threads:
        torch.set_num_threads(config.threads)
    world = get_world(config.model)
    if world is None or world.truth_set is None or world.labeler is None:
        raise ValueError(
            f"Model {config.model!r} is no world with a labeler and a truth-set renderer; the downstream test "
            f"needs exact masks of real images: use --model miniworld."
        )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    split = world.vocabulary()
    seconds: dict[str, float] = {}
    data = _SourceData(config, world, list(split.seen), list(split.unseen), seconds)
    test = data.test()
    rows = {}
    for source in config.sources:
        path = out / "runs" / f"{source}.json"
        if path.exists():
            rows[source] = _read_json(path)
            continue
        training = data.source(source)
        start = time.perf_counter()
        model = train_segmenter(training, config, desc=source)
        rows[source] = {
            **score_segmenter(model, training.classes, test),
            "train_images": len(training.images),
            "train_seconds": time.perf_counter() - start,
            **training.notes,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, rows[source])
    report = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
        "unseen_classes": list(split.unseen),
        "segmenter": "torchvision lraspp_mobilenet_v3_large, no pretrained weights",
        "rows": rows,
        **data.summary(),
        **_comparisons(rows),
        "seconds": seconds,
    }
    write_json_atomic(out / "downstream.json", report)
    return report


def _comparisons(rows: dict[str, Any]) -> dict[str, Any]:
    """Ours against the labeler (ratio, target ≥ 0.9) and the cross-attention reference (gap, target ≥ 15)."""
    if not {"grounding", "labeler", "cross_attention"} <= set(rows):
        return {}
    ours, labeler, attention = (rows[s]["miou"] for s in ("grounding", "labeler", "cross_attention"))
    ratio = ours / labeler if labeler else None
    return {
        "ratio_to_labeler": ratio,
        "gap_to_labeler": ours - labeler,
        "gap_to_cross_attention": ours - attention,
        "target_ratio_met": ratio is not None and ratio >= 0.9,
        "target_gap_met": ours - attention >= 15,
    }


def _read_json(path: Path) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(path.read_text())
    return data


class _SourceData:
    """The sets of one downstream run, made on first use under `out`, and each source's training data."""

    def __init__(
        self, config: DownstreamConfig, world: Any, seen: list[str], unseen: list[str], seconds: dict[str, float]
    ) -> None:
        self.config, self.world, self.seen, self.unseen, self.seconds = config, world, seen, unseen, seconds
        self.out = Path(config.out)
        self._synthetic: list[Any] | None = None

    def _timed(self, name: str, make: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = make()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return result

    def synthetic(self) -> list[Any]:
        """The kept synthetic records (grounding masks, stored attention), synthesized on first use."""
        if self._synthetic is None:
            from groundiff.apps.synthesize import LABELLED, SynthesizeConfig, synthesize
            from groundiff.data.shards import iter_records

            synthesis = SynthesizeConfig(
                out=str(self.out / "synthetic"),
                classes=tuple(self.unseen),
                checkpoint=self.config.checkpoint,
                model=self.config.model if self.config.checkpoint is None else None,
                num_samples=self.config.train_images,
                seed=self.config.seed,
                attention_maps=True,
                formats=("voc",),
                progress=self.config.progress,
            )
            self._timed("synthesize", lambda: synthesize(synthesis))
            records = iter_records(self.out / "synthetic" / LABELLED, features=False)
            self._synthetic = sorted(records, key=lambda r: r.index)
        return self._synthetic

    def _generated(self, name: str, kind: str, count: int, given: str | None) -> Path:
        """A generated set with the world's labeler and attention maps: `given`, or made as `out/name`."""
        if given is not None:
            return Path(given)
        from groundiff.generation.config import GenerateConfig
        from groundiff.generation.generate import generate_set

        generate = GenerateConfig(
            out=str(self.out / name),
            set=kind,
            model=self.config.model,
            num_samples=count,
            seed=self.config.seed,
            attention_maps=True,
            progress=self.config.progress,
        )
        self._timed(name, lambda: generate_set(generate))
        return Path(generate.out)

    def _truth(self, name: str, count: int, seed: int, given: str | None) -> LabelledImages:
        """Renders of the unseen classes with exact masks: `given`, or rendered as `out/name`."""
        from groundiff.data.dataset import GroundingDataset

        folder = given
        if folder is None:
            make = self.world.truth_set
            fields = dict(out=str(self.out / name), set="test-unseen", num_samples=count, seed=seed)
            folder = str(self._timed(name, lambda: make(**fields, attention_maps=False, progress=self.config.progress)))
        dataset = GroundingDataset([folder], features=False)
        records = [dataset[i] for i in range(min(count, len(dataset)))]
        masks = [dict(zip(r.classes, r.masks, strict=True)) for r in records]
        return self._labelled(records, masks, self.unseen)

    def _labelled(self, records: Sequence[Any], masks: Sequence[dict[str, np.ndarray]], classes: list[str]) -> Any:
        images = np.stack([r.image for r in records])
        return LabelledImages(images, index_maps(masks, classes, images.shape[1:3]), classes)

    def test(self) -> LabelledImages:
        return self._truth("truth-test-unseen", self.config.test_images, self.config.seed, self.config.test)

    def source(self, name: str) -> LabelledImages:
        """The training data of one label source (see the module docstring)."""
        records = self.synthetic()
        if name == "grounding":
            return self._labelled(records, [dict(zip(r.classes, r.masks, strict=True)) for r in records], self.unseen)
        if name == "labeler":
            labeler = self.world.labeler()
            found = [labeler.label(r.image[None].copy(), [r.classes])[0].masks for r in records]
            return self._labelled(records, found, self.unseen)
        if name == "cross_attention":
            masks, setting = self._attention_masks(records)
            return dataclasses.replace(self._labelled(records, masks, self.unseen), notes={"setting": setting})
        if name == "exact":
            return self._truth("truth-train-unseen", len(records), self.config.seed + 1, None)
        from groundiff.data.dataset import GroundingDataset

        seen_set = self._generated("seen-train", "train", len(records), self.config.seen_train)
        dataset = GroundingDataset([seen_set], features=False)
        seen = [dataset[i] for i in range(min(len(records), len(dataset)))]
        return self._labelled(seen, [dict(zip(r.classes, r.masks, strict=True)) for r in seen], self.seen)

    def _attention_masks(self, records: Sequence[Any]) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
        """DAAM masks of each record at the rule and threshold best on the validation set, and that setting."""
        from groundiff.data.dataset import GroundingDataset
        from groundiff.evaluation.reference_scores import ATTENTION_ROWS, attention_scores, tune_attention_thresholds
        from groundiff.evaluation.references import REFERENCE_RULES

        val = self._generated("val", "val", self.config.val_images, self.config.val)
        tuned = tune_attention_thresholds(GroundingDataset([val], features=False))
        row = max(tuned, key=lambda r: tuned[r]["val_miou"][f"{tuned[r]['threshold']:.2f}"])
        setting = {"row": row, "rule": ATTENTION_ROWS[row], "tuned_on": str(val), **tuned[row]}
        rule, threshold = REFERENCE_RULES[ATTENTION_ROWS[row]], float(tuned[row]["threshold"])
        masks = []
        for record in records:
            chosen = rule(attention_scores(record), threshold).numpy()  # (N, H, W) bool
            masks.append({name: chosen[i] for i, name in enumerate(record.classes)})
        return masks, setting

    def summary(self) -> dict[str, Any]:
        """What the synthetic images were: the synthesis counts per class."""
        synthesis = _read_json(self.out / "synthetic" / "synthesis.json")
        return {"synthesis": {k: synthesis[k] for k in ("generated", "kept", "keep_rate", "per_class")}}


def samples_picture(out: Path, path: Path, *, count: int = 6, model: str = "miniworld") -> Path:
    """A grid of synthesized samples of a downstream run `out`: the image, the grounding model's masks
    (what the dataset holds) and the labeler's masks on the same image, for comparison."""
    from groundiff.apps.synthesize import LABELLED
    from groundiff.data.shards import iter_records
    from groundiff.visualize import legend_handles, overlay, plt, save_figure
    from groundiff.worlds import get_world

    world = get_world(model)
    labeler = world.labeler() if world is not None and world.labeler is not None else None
    records = list(itertools.islice(iter_records(out / "synthetic" / LABELLED, features=False), count))
    columns = 3 if labeler is not None else 2
    figure, axes = plt.subplots(columns, len(records), figsize=(1.6 * len(records), 1.75 * columns), squeeze=False)
    for column, record in enumerate(records):
        panels = [(record.image, "synthesized"), (overlay(record.image, record.masks), "grounding (ours)")]
        if labeler is not None:
            found = labeler.label(record.image[None].copy(), [record.classes])[0].masks
            masks = [found.get(name, np.zeros_like(record.masks[0])) for name in record.classes]
            panels.append((overlay(record.image, masks), "labeler"))
        for row, (picture, title) in enumerate(panels):
            axes[row, column].imshow(picture, interpolation="nearest")
            axes[row, column].set_axis_off()
            axes[row, column].set_title(title, fontsize=6)
        axes[-1, column].legend(
            handles=legend_handles(record.classes), fontsize=5, loc="upper center", bbox_to_anchor=(0.5, 0)
        )
    return save_figure(figure, path)

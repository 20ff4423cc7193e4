"""Evaluation: category-wise mIoU (and the reference's per-image figure) of a grounding model on test sets.

Category-wise mIoU = mean over classes c of IoU_c, where IoU_c = Σ_images |P_c ∩ G_c| / Σ_images
|P_c ∪ G_c| over every test image whose prompt names c (P = sigmoid(logits) > 0.5, G = the labeler's
mask). `miou_per_image` is the reference code's figure: the mean over images of each image's mean IoU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from groundiff.batching import ClassEmbedder, collate
from groundiff.data.dataset import GroundingDataset
from groundiff.data.records import SampleRecord
from groundiff.data.shards import write_json_atomic, write_text_atomic
from groundiff.metrics import IoUAccumulator


@torch.no_grad()
def predict(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """Binary masks (B, N, H, W) bool of a `GroundingBatch` (padded classes are all False)."""
    device = next(model.parameters()).device
    batch = batch.to(device)
    logits = model(batch.features, batch.embeddings, ~batch.valid)  # (B, N, H, W)
    return (logits.sigmoid() > 0.5) & batch.valid[:, :, None, None]


@torch.no_grad()
def evaluate_dataset(
    model: torch.nn.Module, dataset: Dataset[SampleRecord], embedder: ClassEmbedder, *, batch_size: int = 4
) -> dict[str, Any]:
    """Category-wise and per-image mIoU (in %) of `model` on every sample of `dataset`."""
    was_training = model.training
    model.eval()
    accumulator = IoUAccumulator()
    mask_size = getattr(getattr(model, "config", None), "mask_size", None)
    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=partial(collate, embedder=embedder, mask_size=mask_size)
    )  # type: ignore[arg-type]
    for batch in loader:
        predicted = predict(model, batch).cpu()
        for b, classes in enumerate(batch.classes):
            n = len(classes)
            accumulator.update(predicted[b, :n], batch.targets[b, :n] > 0.5, classes)
    model.train(was_training)
    return summarize(accumulator)


# DAAM's threshold on heat maps normalised to [0, 1].
ATTENTION_THRESHOLD = 0.4


def evaluate_attention(dataset: Dataset[SampleRecord], threshold: float = ATTENTION_THRESHOLD) -> dict[str, Any]:
    """mIoU of the training-free reference: each class's stored cross-attention heat map > `threshold`.

    Raises:
        ValueError: the set was generated without attention maps.
    """
    accumulator = IoUAccumulator()
    for position in range(len(dataset)):  # type: ignore[arg-type]
        record = dataset[position]
        if record.attention is None:
            raise ValueError(
                f"Sample {record.index} has no cross-attention maps; generate the test set with --attention-maps true."
            )
        size = record.image.shape[:2]
        heat = F.interpolate(record.attention.float()[None], size=size, mode="bilinear", align_corners=False)[0]
        target = torch.from_numpy(np.stack(record.masks))  # (N, H, W) bool
        accumulator.update(heat > threshold, target, record.classes)
    return summarize(accumulator)


def summarize(accumulator: IoUAccumulator) -> dict[str, Any]:
    return {
        "miou": 100 * accumulator.category_miou(),
        "miou_per_image": 100 * accumulator.image_miou(),
        "per_class": {name: 100 * iou for name, iou in sorted(accumulator.per_class().items())},
        "samples": accumulator.samples,
    }


@dataclass
class EvaluationReport:
    results: dict[str, dict[str, Any]]
    json_path: Path
    markdown_path: Path
    pictures: list[Path]


def evaluate_checkpoint(
    checkpoint: Path,
    data: list[Path],
    out: Path,
    *,
    top_quality: float | None = None,
    attention_baseline: bool = False,
    device: str = "cpu",
) -> EvaluationReport:
    """Evaluate a checkpoint on test sets; writes the JSON `out`, a markdown table and pictures beside it.

    With `attention_baseline`, each set's entry also holds `attention_baseline`: the same metrics for
    the training-free cross-attention reference (the sets need stored attention maps).

    Raises:
        ValueError: a set whose features do not match the checkpoint's layout, or from another model.
    """
    from groundiff.pipelines import load_text_components
    from groundiff.train import load_grounding_model, open_set, set_model_name

    model, meta = load_grounding_model(checkpoint, device)
    text_encoder, tokenizer = load_text_components(meta["text_model"])
    embedder = ClassEmbedder(text_encoder, tokenizer, meta["template"], end_of_text=meta["end_of_text"])
    results: dict[str, dict[str, Any]] = {}
    examples: dict[str, list[tuple[SampleRecord, np.ndarray]]] = {}
    for folder in data:
        if set_model_name(str(folder)) != meta["text_model"]:
            raise ValueError(
                f"Set {str(folder)!r} was generated by {set_model_name(str(folder))!r}, the checkpoint was trained "
                f"on features of {meta['text_model']!r}; evaluate it on sets of the same model."
            )
        kind = json.loads((folder / "config.json").read_text()).get("set", "")
        if not kind.startswith("test-"):
            raise ValueError(
                f"Set {str(folder)!r} is a {kind!r} set; evaluate on test sets (test-seen, test-mixed, test-unseen), "
                f"which the grounding model never trained on."
            )
        dataset = open_set(str(folder), top_quality=top_quality)
        shapes = {k: list(v.shape) for k, v in dataset[0].features.items()}
        if shapes != meta["feature_shapes"]:
            raise ValueError(
                f"Set {str(folder)!r} stores features {shapes}, the checkpoint expects {meta['feature_shapes']}; "
                f"generate the set with the same blocks, steps and layout as the training set."
            )
        results[kind] = evaluate_dataset(model, dataset, embedder)
        if attention_baseline:
            plain = GroundingDataset([folder], features=False, top_quality=top_quality)
            results[kind]["attention_baseline"] = evaluate_attention(plain)
        examples[kind] = _examples(model, dataset, embedder, count=4)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, results)
    markdown = out.with_suffix(".md")
    write_text_atomic(markdown, results_table(results))
    from groundiff.visualize import overlay_grid, per_class_chart

    pictures = [per_class_chart(results, out.with_name(out.stem + "_per_class.png"))]
    pictures.append(overlay_grid(examples, out.with_name(out.stem + "_examples.png")))
    return EvaluationReport(results, out, markdown, pictures)


def _examples(
    model: torch.nn.Module, dataset: Dataset[SampleRecord], embedder: ClassEmbedder, count: int
) -> list[tuple[SampleRecord, np.ndarray]]:
    records = [dataset[i] for i in range(min(count, len(dataset)))]  # type: ignore[arg-type]
    mask_size = getattr(getattr(model, "config", None), "mask_size", None)
    predicted = predict(model, collate(records, embedder, mask_size)).cpu().numpy()
    return [(record, predicted[i, : len(record.classes)]) for i, record in enumerate(records)]


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per set with category-wise mIoU, the per-image figure and sample count."""
    lines = [
        "| set | mIoU (category-wise) | mIoU per image (reference) | cross-attention reference mIoU | samples |",
        "|---|---|---|---|---|",
    ]
    for name, row in results.items():
        baseline = f"{row['attention_baseline']['miou']:.2f}" if "attention_baseline" in row else "–"
        lines.append(f"| {name} | {row['miou']:.2f} | {row['miou_per_image']:.2f} | {baseline} | {row['samples']} |")
    return "\n".join(lines) + "\n"

"""Evaluation: category-wise mIoU (and the reference's per-image figure) of a grounding model on test sets.

Category-wise mIoU = mean over classes c of IoU_c, where IoU_c = Σ_images |P_c ∩ G_c| / Σ_images
|P_c ∪ G_c| over every test image whose prompt names c (P = sigmoid(logits) > 0.5, G = the labeler's
mask). `miou_per_image` is the reference code's figure: the mean over images of each image's mean IoU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from groundiff.data.batching import ClassEmbedder, collate
from groundiff.data.dataset import GroundingDataset
from groundiff.data.manifest import read_set_config
from groundiff.data.records import SampleRecord
from groundiff.evaluation.metrics import IoUAccumulator
from groundiff.evaluation.reference_scores import (
    ATTENTION_ROWS,
    DAAM_THRESHOLD,
    score_references,
    tune_attention_thresholds,
)
from groundiff.files import write_json_atomic, write_text_atomic
from groundiff.model import GroundingModel
from groundiff.worlds import get_world


@torch.no_grad()
def predict(model: GroundingModel, batch: Any) -> torch.Tensor:
    """Binary masks (B, N, H, W) bool of a `GroundingBatch`: padded queries, and those the model answers
    "not found" (`GroundingModel.found`), are all False."""
    device = next(model.parameters()).device
    batch = batch.to(device)
    output = model.answer(batch.features, batch.embeddings, ~batch.valid)
    return (output.logits.sigmoid() > 0.5) & model.found(output, batch.valid)[:, :, None, None]  # (B, N, H, W)


@torch.no_grad()
def evaluate_dataset(
    model: GroundingModel, dataset: Dataset[SampleRecord], embedder: ClassEmbedder, *, batch_size: int = 4
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


def summarize(accumulator: IoUAccumulator) -> dict[str, Any]:
    """The accumulator's summary in percent: mIoU, its 95 % bootstrap interval, per image, per class."""
    summary = accumulator.summary()
    return {
        **summary,
        "miou": 100 * summary["miou"],
        "miou_ci95": [100 * bound for bound in summary["miou_ci95"]],
        "miou_per_image": 100 * summary["miou_per_image"],
        "per_class": {name: 100 * iou for name, iou in summary["per_class"].items()},
    }


@dataclass
class EvaluationReport:
    results: dict[str, dict[str, Any]]
    json_path: Path
    markdown_path: Path
    pictures: list[Path]


def set_kind(folder: Path) -> str:
    """`kind` of a set, prefixed `truth-` for truth sets (exact masks): `test-seen`, `truth-test-seen`, …"""
    config = read_set_config(folder)
    return ("truth-" if config.get("labeler") == "exact" else "") + config.get("set", "")


def evaluate_checkpoint(
    checkpoint: Path,
    data: list[Path],
    out: Path,
    *,
    top_quality: float | None = None,
    attention_baseline: bool = False,
    val: list[Path] | None = None,
    device: str = "cpu",
    absent_queries: bool = False,
    cross_model: bool = False,
) -> EvaluationReport:
    """Evaluate a checkpoint on test sets beside the floors, ceilings and references; writes the JSON `out`,
    a markdown table and pictures beside it.

    Each set's entry holds the model's `miou`, `miou_ci95`, `classes_covered`, `per_class`, the `target`
    it is scored against (`labeler` masks on generated sets, `exact` masks on truth sets) and
    `references` (see `evaluate_references`). With `attention_baseline`, the cross-attention rows are
    scored too (the sets need stored attention maps), at thresholds chosen on the validation sets
    `val` of the same source (generated or truth), else at DAAM's 0.4. With `absent_queries`, each
    set's entry also holds `absent` (`evaluation.absent.evaluate_absent_queries`: N-acc, T-acc, and
    the mIoU of present queries when one absent class is asked for beside them). With `cross_model`,
    sets of another diffusion model are scored too (the class embeddings stay the checkpoint's model's,
    so that model must share the text encoder; the feature layout is checked as always).

    Raises:
        ValueError: a set whose features do not match the checkpoint's layout, from another model
            (unless `cross_model`), or not a test set.
    """
    from groundiff.data.sets import open_set, set_model_name
    from groundiff.model.checkpoint import load_grounding_model
    from groundiff.sd.pipelines import load_text_components

    model, meta = load_grounding_model(checkpoint, device)
    text_encoder, tokenizer = load_text_components(meta.text_model)
    embedder = ClassEmbedder.for_checkpoint(meta, text_encoder, tokenizer)
    native_side = max(int(shape[-1]) for shape in meta.feature_shapes.values())
    world_rules = _world_rules(meta.text_model)
    thresholds = _attention_thresholds(val or []) if attention_baseline else {}
    results: dict[str, dict[str, Any]] = {}
    examples: dict[str, list[tuple[SampleRecord, np.ndarray]]] = {}
    for folder in data:
        if set_model_name(str(folder)) != meta.text_model and not cross_model:
            raise ValueError(
                f"Set {str(folder)!r} was generated by {set_model_name(str(folder))!r}, the checkpoint was trained "
                f"on features of {meta.text_model!r}; evaluate it on sets of the same model, or pass --cross-model "
                f"when the two models share their text encoder (a fine-tune, another version)."
            )
        kind = set_kind(folder)
        if not kind.removeprefix("truth-").startswith("test-"):
            raise ValueError(
                f"Set {str(folder)!r} is a {kind!r} set; evaluate on test sets (test-seen, test-mixed, test-unseen), "
                f"which the grounding model never trained on."
            )
        if kind in results:
            raise ValueError(f"Two {kind!r} sets given ({str(folder)!r} is the second); give one set of each kind.")
        dataset = open_set(str(folder), top_quality=top_quality)
        shapes = {k: tuple(v.shape) for k, v in dataset[0].features.items()}
        if shapes != meta.feature_shapes:
            raise ValueError(
                f"Set {str(folder)!r} stores features {shapes}, the checkpoint expects {meta.feature_shapes}; "
                f"generate the set with the same blocks, steps and layout as the training set."
            )
        truth = kind.startswith("truth-")
        results[kind] = {**evaluate_dataset(model, dataset, embedder), "target": "exact" if truth else "labeler"}
        plain = GroundingDataset([folder], features=False, top_quality=top_quality)
        results[kind]["references"] = score_references(
            plain,
            native_side=native_side,
            attention=thresholds.get("truth" if truth else "generated"),
            colour_rule=world_rules.get("colour_threshold"),
            two_colours=world_rules.get("two_colours"),
            labeler_rule=world_rules.get("labeler") if truth else None,
        )
        if absent_queries:
            from groundiff.evaluation.absent import evaluate_absent_queries, set_classes

            pool = set_classes(GroundingDataset([folder], features=False))
            results[kind]["absent"] = evaluate_absent_queries(model, dataset, embedder, pool)
        examples[kind] = _examples(model, dataset, embedder, count=4)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, results)
    markdown = out.with_suffix(".md")
    write_text_atomic(markdown, results_table(results))
    from groundiff.visualize import overlay_grid, per_class_chart

    pictures = [per_class_chart(results, out.with_name(out.stem + "_per_class.png"))]
    pictures.append(overlay_grid(examples, out.with_name(out.stem + "_examples.png")))
    return EvaluationReport(results, out, markdown, pictures)


def _attention_thresholds(val: list[Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per source (`generated`, `truth`), the cross-attention thresholds tuned on the validation set of
    that source; a source without one uses DAAM's threshold for both rules."""
    default = {row: {"threshold": DAAM_THRESHOLD, "tuned_on": "none (DAAM's threshold)"} for row in ATTENTION_ROWS}
    chosen = {"generated": default, "truth": default}
    for folder in val:
        kind = set_kind(folder)
        if kind.removeprefix("truth-") != "val":
            raise ValueError(f"--val takes validation sets; {str(folder)!r} is a {kind!r} set.")
        tuned = tune_attention_thresholds(GroundingDataset([folder], features=False))
        source = "truth" if kind.startswith("truth-") else "generated"
        chosen[source] = {row: {**setting, "tuned_on": str(folder)} for row, setting in tuned.items()}
    return chosen


def _world_rules(model_name: str) -> dict[str, Any]:
    """The reference rules a world brings beyond the generic ones (the mini world: its colour threshold,
    and its labeler scored against exact masks on truth sets); none for a plain model."""
    world = get_world(model_name)
    return world.references() if world is not None and world.references is not None else {}


def _examples(
    model: GroundingModel, dataset: Dataset[SampleRecord], embedder: ClassEmbedder, count: int
) -> list[tuple[SampleRecord, np.ndarray]]:
    records = [dataset[i] for i in range(min(count, len(dataset)))]  # type: ignore[arg-type]
    mask_size = getattr(getattr(model, "config", None), "mask_size", None)
    predicted = predict(model, collate(records, embedder, mask_size)).cpu().numpy()
    return [(record, predicted[i, : len(record.classes)]) for i, record in enumerate(records)]


REFERENCE_LABELS = {
    "predict_everything": "predict every pixel (floor)",
    "oracle": "oracle at the model's output side (ceiling)",
    "cross_attention": "cross-attention, DAAM threshold",
    "cross_attention_argmax": "cross-attention, DAAM argmax",
    "colour_threshold": "colour threshold (knows the world's colours)",
    "colour_threshold_two_colours": "colour threshold, images of two colours",
    "labeler": "labeler vs exact masks",
}


ABSENT_LABELS = {"n_acc": "absent queries answered empty (N-acc)", "t_acc": "present queries answered (T-acc)"}


def format_miou(row: dict[str, Any]) -> str:
    """`71.2 [69.8, 72.5]`: a category-wise mIoU with its 95 % bootstrap interval."""
    low, high = row["miou_ci95"]
    return f"{row['miou']:.1f} [{low:.1f}, {high:.1f}]"


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: one column per set; rows are the model and every reference scored on that set."""
    names = list(results)
    lines = [
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| masks scored against | " + " | ".join(str(results[n].get("target", "labeler")) for n in names) + " |",
        "| **grounding model** | " + " | ".join(f"**{format_miou(results[n])}**" for n in names) + " |",
    ]
    for key, label in REFERENCE_LABELS.items():
        cells = []
        for name in names:
            row = results[name].get("references", {}).get(key)
            threshold = f" (τ {row['threshold']:.2f})" if row and "threshold" in row else ""
            cells.append(format_miou(row) + threshold if row else "–")
        if any(cell != "–" for cell in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if all("absent" in results[n] for n in names):
        for key, label in (
            ("n_acc", "absent queries answered empty (N-acc)"),
            ("t_acc", "present queries answered (T-acc)"),
        ):
            cells = [f"{results[n]['absent'][key]:.1f} %" for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| classes covered | " + " | ".join(str(results[n]["classes_covered"]) for n in names) + " |")
    lines.append("| images | " + " | ".join(str(results[n]["samples"]) for n in names) + " |")
    return "\n".join(lines) + "\n"

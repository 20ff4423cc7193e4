"""The shipped mini world as a `World`: its tiny pipeline, labeler, CLIP-IQA scorer and vocabulary,
the generation settings it was trained for, its colour-threshold reference and its truth sets."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from groundiff.worlds import World

NAME = "miniworld"


def _pipeline(*, device: str = "cpu", model: str = NAME) -> Any:
    from groundiff.miniworld.weights import load_miniworld_pipeline

    return load_miniworld_pipeline(model=model, device=device)


def _labeler(**options: Any) -> Any:
    from groundiff.miniworld.weights import load_miniworld_labeler

    return load_miniworld_labeler(**options)


def _scorer(*, device: str = "cpu", batch_size: int = 32) -> Any:
    from groundiff.miniworld.weights import load_miniworld_clip
    from groundiff.scoring import ClipIqaScorer

    # The mini world's CLIP takes pixels in [-1, 1].
    model = load_miniworld_clip().to(device)
    return ClipIqaScorer(model, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), batch_size=batch_size, name=NAME)


def _vocabulary() -> Any:
    from groundiff.data.vocabulary import ClassSplit
    from groundiff.miniworld.vocabulary import SEEN_CLASSES, UNSEEN_CLASSES

    return ClassSplit(NAME, SEEN_CLASSES, UNSEEN_CLASSES)


def _references() -> dict[str, Any]:
    """The colour threshold (it knows the world's colours, which no real world offers), scored on all
    images and on two-colour images only, and the labeler itself (against exact masks on truth sets)."""
    import torch

    from groundiff.miniworld.colour_threshold import colour_threshold_masks
    from groundiff.miniworld.vocabulary import split_class_name

    labeler = _labeler()

    def colour(record: Any, target: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(colour_threshold_masks(record.image, record.classes))

    def labeled(record: Any, target: torch.Tensor) -> torch.Tensor:
        found = labeler.label(record.image[None].copy(), [record.classes])[0].masks  # decoded PNGs are read-only
        return torch.stack(
            [torch.from_numpy(found[c]) if c in found else torch.zeros_like(target[0]) for c in record.classes]
        )

    def two_colours(record: Any) -> bool:
        colours = [split_class_name(name)[0] for name in record.classes]
        return len(set(colours)) == len(colours)

    return {"colour_threshold": colour, "two_colours": two_colours, "labeler": labeled}


def _truth_set(*, pipe: Any = None, model: str = NAME, **fields: Any) -> Path:
    from groundiff.miniworld.truth import TruthSetConfig, make_truth_set

    return make_truth_set(TruthSetConfig(model=model, **fields), pipe=pipe)


def _labeler_accuracy(labeler: Any) -> float:
    from groundiff.miniworld.evaluate import measure_labeler

    return float(measure_labeler(labeler, count=200)["miou"])


def _grounding_checkpoint() -> Path:
    from groundiff.miniworld.weights import GROUNDING_DIR, require_weights

    return require_weights(GROUNDING_DIR / "checkpoint.json", "grounding checkpoint").parent


MINIWORLD = World(
    name=NAME,
    pipeline=_pipeline,
    labeler=_labeler,
    scorer=_scorer,
    vocabulary=_vocabulary,
    # The settings the mini world's pipeline was trained and measured with (a few times faster than SD's).
    steps=20,
    guidance_scale=4.0,
    batch_size=16,
    references=_references,
    truth_set=_truth_set,
    labeler_accuracy=_labeler_accuracy,
    grounding_checkpoint=_grounding_checkpoint,
)


def _version(model: str) -> World:
    """The mini world with another U-Net version (same VAE, text encoder, labeler, scorer and vocabulary).

    No grounding checkpoint ships for it: `ground` and `serve` need `--checkpoint` (one trained on the
    shipped U-Net's features runs, but scores lower; see docs/RESULTS.md, "Several diffusion models").
    """
    return dataclasses.replace(
        MINIWORLD,
        name=model,
        pipeline=functools.partial(_pipeline, model=model),
        truth_set=functools.partial(_truth_set, model=model),
        grounding_checkpoint=None,
    )


MINIWORLD_FT = _version("miniworld-ft")
MINIWORLD_V2 = _version("miniworld-v2")
MINIWORLD_CROWD = _version("miniworld-crowd")

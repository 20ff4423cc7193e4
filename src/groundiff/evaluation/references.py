"""Training-free references and bounds for the grounding masks: pure functions on tensors.

- Cross-attention (DAAM): `expand_heat` turns a class's latent heat map (`capture.attention`) into
  image-size scores in [0, 1]; a rule in `REFERENCE_RULES` turns scores into masks, with a threshold
  chosen by `tune_threshold` on validation data.
- Floor: `predict_everything`, every pixel of every class.
- Ceiling: `oracle_masks`, the exact masks as seen through a side×side output.

Legend for shape comments: N classes, H×W mask size, h×w latent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from groundiff.capture.attention import min_max_normalise
from groundiff.evaluation.metrics import IoUAccumulator

Rule = Callable[[torch.Tensor, float], torch.Tensor]

# Candidate thresholds for `tune_threshold`: 0.05, 0.10, …, 0.95.
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _check_maps(name: str, maps: torch.Tensor) -> None:
    if maps.dim() != 3:
        raise ValueError(f"{name} must be (N, H, W), one map per class; got shape {tuple(maps.shape)}.")


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1) (scores are min-max normalised); got {threshold}.")


def expand_heat(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """DAAM's `expand_as`: per-class heat upsampled to the mask size and min-max normalised.

    Args:
        heat: (N, h, w) heat maps, any float dtype (e.g. the stored float16 `class_heat_maps`).
        size: (H, W) of the masks.
    Returns:
        (N, H, W) float32 in [0, 1]: bicubic upsampling, then (x − min) / (max − min + 1e-8) per map.
    """
    _check_maps("heat", heat)
    upsampled = F.interpolate(heat.float()[None], size=size, mode="bicubic", align_corners=False)[0]  # (N, H, W)
    return min_max_normalise(upsampled)


def threshold_masks(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """DAAM's rule: (N, H, W) bool, `scores > threshold` per class (classes may overlap).

    Args:
        scores: (N, H, W) float in [0, 1], e.g. from `expand_heat`.
        threshold: in (0, 1); DAAM's paper used 0.4.
    """
    _check_maps("scores", scores)
    _check_threshold(threshold)
    return scores > threshold


def argmax_masks(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-pixel argmax over the prompt's classes with a background threshold: (N, H, W) bool.

    A pixel goes to the class with the highest score (the first such class on a tie), and only if
    that score is above `threshold`; otherwise it is background. Masks never overlap.

    Args:
        scores: (N, H, W) float in [0, 1], e.g. from `expand_heat`.
        threshold: in (0, 1).
    """
    _check_maps("scores", scores)
    _check_threshold(threshold)
    best = scores.argmax(dim=0)  # (H, W)
    classes = torch.arange(scores.shape[0], device=scores.device)[:, None, None]  # (N, 1, 1)
    return (classes == best[None]) & (scores.amax(dim=0) > threshold)[None]


REFERENCE_RULES: dict[str, Rule] = {"threshold": threshold_masks, "argmax": argmax_masks}


def tune_threshold(
    score_sets: Iterable[tuple[torch.Tensor, torch.Tensor, Sequence[str]]],
    rule: Rule,
    grid: Sequence[float] = THRESHOLD_GRID,
) -> tuple[float, dict[float, float]]:
    """The threshold of `grid` that maximises the category-wise mIoU of `rule` over a set.

    Call it on VALIDATION images only: a threshold tuned on the test set makes the reference look
    better than it is. The set is read once, so a generator works.

    Args:
        score_sets: per image, (scores (N, H, W) float in [0, 1], target (N, H, W) bool, N class names).
        rule: scores and threshold → masks, e.g. `threshold_masks` or `argmax_masks`.
        grid: candidate thresholds, each in (0, 1).
    Returns:
        (best threshold, {threshold: category-wise mIoU in [0, 1]}); ties go to the lowest threshold.
    Raises:
        ValueError: an empty grid or set, a threshold outside (0, 1), or scores and target of
            different shapes.
    """
    thresholds = sorted(grid)
    if not thresholds:
        raise ValueError("tune_threshold needs a non-empty grid of thresholds, e.g. THRESHOLD_GRID.")
    for threshold in thresholds:
        _check_threshold(threshold)
    accumulators = {threshold: IoUAccumulator() for threshold in thresholds}
    for index, (scores, target, class_names) in enumerate(score_sets):
        if scores.shape != target.shape:
            raise ValueError(
                f"Image {index} of score_sets has scores of shape {tuple(scores.shape)} but target of shape "
                f"{tuple(target.shape)}; expand the scores to the mask size first (`expand_heat`)."
            )
        for threshold, accumulator in accumulators.items():
            accumulator.update(rule(scores, threshold), target, list(class_names))
    if not accumulators[thresholds[0]].samples:
        raise ValueError("tune_threshold got no images; pass the validation set's (scores, target, names) triples.")
    mious = {threshold: accumulator.category_miou() for threshold, accumulator in accumulators.items()}
    best = max(thresholds, key=lambda t: (mious[t], -t))  # highest mIoU, then lowest threshold
    return best, mious


def predict_everything(target: torch.Tensor) -> torch.Tensor:
    """The floor: (N, H, W) bool, every pixel of every class, whatever the image.

    Args:
        target: (N, H, W) ground-truth masks, read for their shape and device only.
    """
    _check_maps("target", target)
    return torch.ones_like(target, dtype=torch.bool)


def oracle_masks(target: torch.Tensor, side: int) -> torch.Tensor:
    """The ceiling of a model whose output is side×side: the exact masks seen through that resolution.

    Each mask is area-averaged down to side×side (the share of each output cell it covers), upsampled
    bilinearly back to (H, W) and thresholded at 0.5, as a model predicting those cells perfectly and
    decoded like ours would. Details thinner than a cell are lost.

    Args:
        target: (N, H, W) bool or {0, 1} exact masks.
        side: the model's output side, ≥ 1; with side ≥ max(H, W) the target is returned unchanged.
    Returns:
        (N, H, W) bool.
    """
    _check_maps("target", target)
    if side < 1:
        raise ValueError(f"side must be a positive output side in pixels; got {side}.")
    size = tuple(target.shape[1:])
    if side >= max(size):
        return target.bool()
    coarse = F.interpolate(target.float()[None], size=(side, side), mode="area")  # (1, N, side, side)
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0] > 0.5  # (N, H, W)

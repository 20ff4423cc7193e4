"""Training-free references: DAAM aggregation, expansion and rules, threshold tuning, floor, oracle, colour baseline."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from groundiff.capture.attention import CrossAttentionSums, class_heat_maps
from groundiff.evaluation.references import (
    REFERENCE_RULES,
    THRESHOLD_GRID,
    argmax_masks,
    expand_heat,
    oracle_masks,
    predict_everything,
    threshold_masks,
    tune_threshold,
)
from groundiff.miniworld.colour_threshold import colour_threshold_masks
from groundiff.miniworld.renderer import render_scene

# DAAM aggregation example: latent 16, layers of side 4 (factor 4), 8 (factor 2) and 2 (factor 8, skipped).
LATENT, BATCH, HEADS, TOKENS, STEPS = 16, 2, 2, 3, 2
SIDES = {"down.attn2": 4, "up.attn2": 8, "mid.attn2": 2}


def keys_cubic(x: float) -> float:
    """Keys' cubic convolution kernel with a = −0.75 (PyTorch's and PIL's bicubic)."""
    a, x = -0.75, abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0


def bicubic_matrix(src: int, dst: int) -> torch.Tensor:
    """(dst, src) float64: 1-D bicubic resampling with half-pixel centres and replicated borders."""
    matrix = torch.zeros(dst, src, dtype=torch.float64)
    for i in range(dst):
        position = (i + 0.5) * src / dst - 0.5
        left = int(np.floor(position))
        for k in range(-1, 3):
            matrix[i, min(max(left + k, 0), src - 1)] += keys_cubic(position - (left + k))
    return matrix


def fake_pipe(latent: int = LATENT) -> SimpleNamespace:
    return SimpleNamespace(
        do_classifier_free_guidance=True, unet=SimpleNamespace(config=SimpleNamespace(sample_size=latent))
    )


def layer_call(conditional: torch.Tensor) -> torch.Tensor:
    """One guided layer call's probabilities (2B·heads, s·s, T), built element by element from the
    conditional (B, heads, T, s, s) maps; the unconditional half is 100 everywhere (must be dropped)."""
    batch, heads, tokens, side, _ = conditional.shape
    probabilities = torch.full((2 * batch * heads, side * side, tokens), 100.0)
    for b in range(batch):
        for h in range(heads):
            for t in range(tokens):
                for row in range(side):
                    for col in range(side):
                        probabilities[(batch + b) * heads + h, row * side + col, t] = conditional[b, h, t, row, col]
    return probabilities


def test_daam_aggregation_matches_a_loop_over_layers_heads_and_steps():
    generator = torch.Generator().manual_seed(0)
    recorded = {  # layer → per step, sharp conditional probabilities (B, heads, T, s, s) so that bicubic undershoots
        layer: [(4 * torch.randn(BATCH, HEADS, TOKENS, s, s, generator=generator)).softmax(dim=2) for _ in range(STEPS)]
        for layer, s in SIDES.items()
    }
    recorded["mid.attn2"] = [torch.full_like(p, 50.0) for p in recorded["mid.attn2"]]  # skipped, so never seen
    sums = CrossAttentionSums(fake_pipe())
    for step in range(STEPS):
        for layer, maps in recorded.items():
            sums.add(layer, layer_call(maps[step]), HEADS)

    expected = torch.zeros(BATCH, TOKENS, LATENT, LATENT, dtype=torch.float64)
    lowest = 0.0
    for b in range(BATCH):
        for t in range(TOKENS):
            kept = []
            for layer in ("down.attn2", "up.attn2"):  # factor 8 (mid, side 2) is left out
                up = bicubic_matrix(SIDES[layer], LATENT)
                for h in range(HEADS):
                    step_sum = sum(recorded[layer][step][b, h, t].double() for step in range(STEPS))
                    upsampled = up @ step_sum @ up.T
                    lowest = min(lowest, float(upsampled.min()))
                    kept.append(upsampled.clamp(min=0))
            expected[b, t] = sum(kept) / len(kept)

    assert lowest < -1e-3  # bicubic undershoots here, so the clamp is exercised
    heat = sums.heat()
    assert heat.shape == (BATCH, TOKENS, LATENT, LATENT) and heat.dtype == torch.float32
    torch.testing.assert_close(heat.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sums.heat(LATENT), heat, rtol=0, atol=0)


def test_daam_aggregation_keeps_per_head_sums_and_refuses_nothing_to_aggregate():
    sums = CrossAttentionSums(fake_pipe())
    only_coarse = torch.rand(BATCH, HEADS, TOKENS, 2, 2)
    sums.add("mid.attn2", layer_call(only_coarse), HEADS)
    sums.add("mid.attn2", layer_call(only_coarse), HEADS)
    torch.testing.assert_close(sums.sums["mid.attn2"], 2 * only_coarse)  # (B, heads, T, s, s), conditional only
    with pytest.raises(RuntimeError, match="capture_cross_attention"):
        sums.heat()  # its only layer has factor 16 / 2 == 8
    with pytest.raises(ValueError, match="square images"):
        sums.add("odd", torch.rand(2 * BATCH * HEADS, 12, TOKENS), HEADS)


def test_class_heat_maps_average_the_name_tokens_and_min_max_normalise(tokenizer):
    prompt = "a photograph of a red disc and a blue ring"  # <sot> a photograph of a red disc and a blue ring
    heat = torch.zeros(77, 2, 2)
    heat[5] = torch.tensor([[3.0, 1.0], [1.0, 1.0]])  # red
    heat[6] = torch.tensor([[3.0, 1.0], [1.0, 5.0]])  # disc: mean [[3, 1], [1, 3]]
    heat[9] = torch.tensor([[2.0, 2.0], [2.0, 4.0]])  # blue
    heat[10] = torch.tensor([[2.0, 4.0], [2.0, 2.0]])  # ring: mean [[2, 3], [2, 3]]
    maps = class_heat_maps(heat, tokenizer, prompt, ["red disc", "blue ring"])
    expected = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-7)


def test_expand_heat_is_min_max_per_map_and_a_bump_survives_where_peak_division_keeps_everything():
    heat = torch.tensor([[[2.0, 4.0], [6.0, 10.0]], [[-1.0, -1.0], [-1.0, 1.0]]])
    expanded = expand_heat(heat.half(), (2, 2))  # same size: bicubic is the identity
    expected = torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(expanded, expected, rtol=0, atol=1e-7)
    assert expanded.dtype == torch.float32 and torch.equal(expanded.flatten(1).amin(1), torch.zeros(2))

    bump = torch.full((1, 8, 8), 0.47)  # the old maps: minimum about 0.47 of the peak
    bump[0, 3:5, 3:5] = 1.0
    assert (bump / bump.amax() > 0.4).all()  # old recipe: divide by the peak, threshold 0.4 keeps every pixel
    masks = threshold_masks(expand_heat(bump, (32, 32)), 0.4)
    rows, cols = torch.nonzero(masks[0], as_tuple=True)
    assert masks[0, 15:17, 15:17].all()  # the bump's centre is kept
    assert rows.min() >= 10 and rows.max() <= 21 and cols.min() >= 10 and cols.max() <= 21  # nothing far from it
    assert int(masks.sum()) < 0.15 * 32 * 32


def test_threshold_and_argmax_rules_resolve_overlap_and_background():
    scores = torch.tensor(
        [
            [[0.9, 0.6, 0.2, 0.1, 0.5]],
            [[0.5, 0.7, 0.3, 0.1, 0.5]],
            [[0.1, 0.1, 0.35, 0.0, 0.2]],
        ]
    )  # (N=3, H=1, W=5)
    assert threshold_masks(scores, 0.3).tolist() == [
        [[True, True, False, False, True]],
        [[True, True, False, False, True]],
        [[False, False, True, False, False]],
    ]
    assert argmax_masks(scores, 0.3).tolist() == [
        [[True, False, False, False, True]],  # the tie at the last pixel goes to the first class
        [[False, True, False, False, False]],
        [[False, False, True, False, False]],  # the fourth pixel's best score 0.1 is background
    ]
    assert REFERENCE_RULES["argmax"] is argmax_masks and REFERENCE_RULES["threshold"] is threshold_masks
    for bad in (0.0, 1.0, 40):
        with pytest.raises(ValueError, match="threshold must lie in \\(0, 1\\)"):
            threshold_masks(scores, bad)
    with pytest.raises(ValueError, match="scores must be \\(N, H, W\\)"):
        argmax_masks(scores[0, 0], 0.5)


def test_tune_threshold_finds_the_best_threshold_and_breaks_ties_low():
    ramp = torch.linspace(0.005, 0.995, 100).reshape(1, 10, 10)  # 0.005, 0.015, …, 0.995
    images = [(ramp, ramp > 0.6, ["dog"]), (1 - ramp, (1 - ramp) > 0.6, ["dog"])]
    best, mious = tune_threshold(iter(images), threshold_masks)  # a one-pass iterator is enough
    assert best == 0.6 and mious[0.6] == 1.0
    assert list(mious) == list(THRESHOLD_GRID)
    assert mious[0.55] == pytest.approx(40 / 45) and mious[0.65] == pytest.approx(35 / 40)

    two_levels = torch.where(ramp > 0.5, 0.8, 0.22)  # every threshold in [0.22, 0.8) is exact
    best, mious = tune_threshold([(two_levels, two_levels > 0.5, ["cat"])], threshold_masks)
    assert best == 0.25 and mious[0.25] == mious[0.75] == 1.0 and mious[0.2] < 1.0

    with pytest.raises(ValueError, match="no images"):
        tune_threshold([], threshold_masks)
    with pytest.raises(ValueError, match="Image 0 .* expand the scores"):
        tune_threshold([(ramp, ramp[:, :5] > 0.5, ["dog"])], threshold_masks)


def test_floor_and_oracle():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[0, :, 3] = True  # a one-pixel line
    target[1, 0:4, 4:8] = True  # a block aligned with 2×2 cells
    assert predict_everything(target).all() and predict_everything(target).shape == (2, 8, 8)
    assert torch.equal(oracle_masks(target, 8), target)
    coarse = oracle_masks(target, 4)
    assert not coarse[0].any()  # the line covers half of each 2×2 cell: 0.5 is not above 0.5
    assert torch.equal(coarse[1], target[1])
    with pytest.raises(ValueError, match="side must be a positive"):
        oracle_masks(target, 0)


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    return float((pred & target).sum() / (pred | target).sum())


@pytest.mark.parametrize("seed", range(20))
def test_colour_threshold_matches_the_exact_render_masks(seed):
    names = ["red disc", "blue ring"]
    scene = render_scene(names, seed)
    masks = colour_threshold_masks(scene.image, names)
    assert masks.shape == (2, 64, 64) and masks.dtype == bool
    for name, mask in zip(names, masks, strict=True):
        assert mask_iou(mask, scene.masks[name]) >= 0.98, name


def test_colour_threshold_cannot_tell_two_classes_of_one_colour_apart():
    names = ["red disc", "red ring"]
    scene = render_scene(names, 3)
    masks = colour_threshold_masks(scene.image, names)
    assert np.array_equal(masks[0], masks[1])
    assert mask_iou(masks[0], scene.masks["red disc"] | scene.masks["red ring"]) >= 0.98
    with pytest.raises(ValueError, match="uint8"):
        colour_threshold_masks(scene.image / 255.0, names)
    with pytest.raises(ValueError, match="Unknown mini-world class 'red dog'"):
        colour_threshold_masks(scene.image, ["red dog"])

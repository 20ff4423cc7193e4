"""Overlapping masks: pairs that share a word, pixels claimed twice, the bootstrap of a ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from groundiff.evaluation.metrics import ratio_ci95
from groundiff.evaluation.overlap import evaluate_overlap, pair_overlap, shares_a_word
from test_absent import FixedEmbedder, ScriptedModel, record


def test_pairs_share_a_word_when_colour_or_shape_repeats():
    assert shares_a_word(["red ring", "red disc"]) and shares_a_word(["red ring", "blue ring"])
    assert not shares_a_word(["red ring", "blue disc"])
    assert shares_a_word(["red ring", "blue disc", "green ring"])  # any pair of three


def test_pair_overlap_counts_shared_and_claimed_pixels():
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True  # 8 pixels
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[1:3] = True  # 8 pixels, 4 shared with a
    assert pair_overlap(torch.stack([a, b])) == (4, 12)
    assert pair_overlap(torch.stack([a, ~a])) == (0, 16)
    assert pair_overlap(torch.stack([a, b, a])) == (4 + 8 + 4, 12 + 8 + 12)


def test_ratio_interval_brackets_the_ratio_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    shared, claimed = rng.integers(0, 10, 400).astype(float), rng.integers(10, 20, 400).astype(float)
    low, high = ratio_ci95(shared, claimed)
    assert low < shared.sum() / claimed.sum() < high
    small_low, small_high = ratio_ci95(shared[:25], claimed[:25])
    assert small_high - small_low > high - low
    assert ratio_ci95(shared, claimed) == (low, high)  # seeded
    with pytest.raises(ValueError, match="1-D"):
        ratio_ci95(shared, claimed[:3])


def test_a_model_that_paints_everything_overlaps_completely():
    dataset = [record(0, ["cat", "dog"]), record(1, ["sofa", "train"])]
    rows = evaluate_overlap(ScriptedModel(None), dataset, FixedEmbedder())
    assert set(rows) == {"share no word", "all"}  # single-word names share nothing
    assert rows["all"]["overlap"] == 100.0 and rows["all"]["images"] == 2
    # record(): the first mask is the diagonal, the second the whole image: they share 32 of 1024 pixels.
    assert rows["all"]["target_overlap"] == pytest.approx(100 * 32 / 1024)
    says_absent = evaluate_overlap(ScriptedModel({"cat", "sofa"}), dataset, FixedEmbedder())
    assert says_absent["all"]["overlap"] == 0.0  # one mask per image left: nothing claimed twice

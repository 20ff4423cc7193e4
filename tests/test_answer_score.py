"""The answer score: class-agnostic mask statistics, a logistic fit on validation and its threshold."""

from __future__ import annotations

import itertools

import pytest
import torch

from groundiff.evaluation.answer_score import QueryTable, best_threshold, fit_answer_weights
from groundiff.model.answers import answer_features, found_queries
from groundiff.model.config import ANSWER_FEATURES
from groundiff.training.config import TrainConfig, TuneAnswersConfig
from test_model import TINY_CONFIG


def two_queries() -> torch.Tensor:
    """(1, 2, 4, 4) logits: query 0 paints 4 pixels at 3.0; query 1 paints those at 1.0 and 4 more of its own."""
    logits = torch.full((1, 2, 4, 4), -20.0)
    logits[0, 0, :2, :2] = 3.0
    logits[0, 1, :2, :2] = 1.0
    logits[0, 1, 2:, 2:] = 2.0
    return logits


def test_answer_features_are_peak_log_area_and_hard_and_soft_own_shares():
    logits = two_queries()
    features = answer_features(logits, torch.ones(1, 2, dtype=torch.bool))[0]
    assert features.shape == (2, len(ANSWER_FEATURES))
    p3, p1, p2 = (torch.sigmoid(torch.tensor(v)).item() for v in (3.0, 1.0, 2.0))
    # Query 1 over its 8 pixels: 4 shared, where query 0 holds p3 of the p3 + p1 mass, and 4 its own.
    soft_shared = p1 * p1 / (p1 + p3)
    tail = torch.sigmoid(torch.tensor(-20.0)).item()  # what the unpainted pixels still weigh
    mass_1 = 4 * p1 + 4 * p2 + 8 * tail
    expected_1 = (4 * soft_shared + 4 * p2 * p2 / (p2 + tail) + 8 * tail / 2) / mass_1
    assert features[1].tolist() == pytest.approx([2.0, torch.log(torch.tensor(0.5)).item(), 0.5, expected_1], rel=1e-4)
    assert features[0, :3].tolist() == pytest.approx([3.0, torch.log(torch.tensor(0.25)).item(), 1.0])
    # A padding slot claims nothing: query 1 asked alone owns all of its mask.
    alone = answer_features(logits, torch.tensor([[False, True]]))[0, 1]
    assert alone[2].item() == 1.0 and alone[3].item() > 0.99


def test_a_score_finds_an_object_where_its_weighted_statistics_exceed_zero():
    logits, valid = two_queries(), torch.ones(1, 2, dtype=torch.bool)
    own_share_over_half = [0.0, 0.0, 1.0, 0.0, -0.6]  # found where own share > 0.6
    assert found_queries(logits, None, valid, answer_weights=own_share_over_half).tolist() == [[True, False]]
    big_masks = [0.0, 1.0, 0.0, 0.0, 1.0]  # found where log area share > -1: 8 pixels of 16 yes, 4 no
    assert found_queries(logits, None, valid, answer_weights=big_masks).tolist() == [[False, True]]
    # The score adds to the rest of the rule: an empty mask or a low presence is still "not found".
    presence = torch.tensor([[-5.0, 5.0]])
    assert found_queries(logits, presence, valid, answer_weights=own_share_over_half).tolist() == [[False, False]]
    empty = torch.full((1, 1, 4, 4), -20.0)
    assert not found_queries(empty, None, torch.ones(1, 1, dtype=torch.bool), answer_weights=[0, 0, 0, 0, 9]).any()


def test_a_config_takes_one_weight_per_feature_and_a_bias_and_tune_answers_names_its_rules():
    weights = [0.5] * (len(ANSWER_FEATURES) + 1)
    config = TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "answer_weights": weights})
    assert config.answer_weights == tuple(weights)
    assert TINY_CONFIG.__class__.from_dict(config.to_dict()) == config  # saved as a list, loaded as a tuple
    with pytest.raises(ValueError, match="one per answer feature"):
        TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "answer_weights": weights[:-1]})
    with pytest.raises(ValueError, match="grid, score"):
        TuneAnswersConfig(checkpoint="run/best", rule="logistic")
    with pytest.raises(ValueError, match="grid, score"):
        TrainConfig(answer_rule="logistic")


def table(present_share: torch.Tensor, absent_share: torch.Tensor, *, seed: int = 0) -> QueryTable:
    """Queries whose own share tells them apart (other features: noise), all with a mask."""
    generator = torch.Generator().manual_seed(seed)
    shares = torch.cat([present_share, absent_share])
    noise = torch.randn(len(shares), 3, generator=generator, dtype=torch.float64)
    features = torch.stack([noise[:, 0], noise[:, 1], shares, noise[:, 2]], dim=1)
    present = torch.cat([torch.ones(len(present_share)), torch.zeros(len(absent_share))]).bool()
    return QueryTable(features, present, torch.ones(len(shares), dtype=torch.bool))


def test_the_fitted_score_separates_what_can_be_separated_and_folds_its_threshold_into_the_bias():
    shares = torch.linspace(0.0, 1.0, 61, dtype=torch.float64)
    separable = table(shares[shares >= 0.6], shares[shares <= 0.5])
    fit = fit_answer_weights(separable, min_t_acc=99.0)
    assert (fit["n_acc"], fit["t_acc"]) == (100.0, 100.0)
    weights = torch.tensor(fit["answer_weights"], dtype=torch.float64)
    found = separable.features @ weights[:-1] + weights[-1] > 0
    assert torch.equal(found, separable.present)  # the bias already holds the threshold
    assert weights[2] == weights[:-1].abs().max()  # the own share carries the score, not the noise


def test_the_threshold_is_the_best_n_acc_at_the_t_acc_floor_as_a_search_of_every_cut_finds():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(50, generator=generator, dtype=torch.float64)
    present = torch.rand(50, generator=generator) < 0.6
    scores[present] += 1.0  # overlapping: every cut trades one answer against the other
    eligible = torch.rand(50, generator=generator) > 0.1  # some queries have no mask: never found
    queries = QueryTable(scores[:, None], present, eligible)
    for floor in (0.0, 80.0, 95.0, 100.0):
        threshold, n_acc, t_acc = best_threshold(scores, queries, floor)
        found = eligible & (scores > threshold)
        assert t_acc == pytest.approx(100 * float((found & present).sum()) / float(present.sum()))
        assert n_acc == pytest.approx(100 * float((~found & ~present).sum()) / float((~present).sum()))
        cuts = []
        for cut in itertools.chain([-1e9], scores.tolist()):  # found: score above the cut
            kept = eligible & (scores > cut)
            cuts.append(
                (
                    100 * float((~kept & ~present).sum()) / float((~present).sum()),
                    100 * float((kept & present).sum()) / float(present.sum()),
                )
            )
        reachable = [cut for cut in cuts if cut[1] >= floor]
        if reachable:
            assert t_acc >= floor and n_acc == pytest.approx(max(n for n, _ in reachable))
        else:  # the floor is out of reach (some present queries have no mask): the laxest cut
            assert t_acc == pytest.approx(max(t for _, t in cuts))


def test_fitting_needs_both_answers_among_queries_with_a_mask():
    only_present = table(torch.linspace(0.6, 1.0, 10, dtype=torch.float64), torch.empty(0, dtype=torch.float64))
    with pytest.raises(ValueError, match="--rule grid"):
        fit_answer_weights(only_present, min_t_acc=99.0)

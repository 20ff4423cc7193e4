"""Absent objects: negative queries in training, the presence output, "not found" answers, N-acc / T-acc."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import config, generate
from groundiff.cli import main
from groundiff.data import GroundingDataset
from groundiff.data.batching import ClassEmbedder, NegativeQueries, collate, shares_word
from groundiff.data.records import SampleRecord
from groundiff.data.sets import open_set
from groundiff.evaluation.absent import OWN_SHARES, PRESENCE_THRESHOLDS, evaluate_absent_queries, set_classes
from groundiff.evaluation.config import MIN_T_ACC
from groundiff.evaluation.metrics import proportion_ci95
from groundiff.ground import ground
from groundiff.model import GroundingModel, GroundingOutput, build_grounding_model
from groundiff.model.answers import found_queries
from groundiff.model.checkpoint import load_grounding_model, save_checkpoint
from groundiff.sd.pipelines import load_pipeline, load_text_components
from groundiff.training.config import TrainConfig
from groundiff.training.loop import train
from groundiff.training.losses import presence_loss
from test_model import TEXT_WIDTH, TINY_CONFIG, TINY_SHAPES, embeddings, features, tiny_model

POOL = ("cat", "dog", "sofa", "train", "bus")


class FixedEmbedder:
    """Class embeddings by name (a stand-in for the frozen text encoder)."""

    width = TEXT_WIDTH

    def __init__(self, pool: tuple[str, ...] = POOL) -> None:
        self.pool = pool

    def __call__(self, classes):
        return torch.stack([torch.full((TEXT_WIDTH,), float(self.pool.index(name))) for name in classes])


def record(index: int, classes: list[str]) -> SampleRecord:
    masks = [np.eye(32, dtype=bool) if i == 0 else np.ones((32, 32), dtype=bool) for i in range(len(classes))]
    maps = {name: torch.zeros(shape) for name, shape in TINY_SHAPES.items()}
    return SampleRecord(index, np.zeros((32, 32, 3), np.uint8), maps, masks, {"classes": classes, "prompt": ""})


def test_negative_queries_name_only_absent_classes_at_any_position_and_repeat_exactly():
    negatives = NegativeQueries(POOL, fraction=1.0, seed=3)
    drawn = [negatives(index, ["cat", "dog"]) for index in range(40)]
    assert all(len(q) == 3 and q.count("cat") == 1 and q.count("dog") == 1 for q in drawn)
    assert {name for q in drawn for name in q} == set(POOL)  # every absent class is drawn sometimes
    positions = {next(i for i, name in enumerate(q) if name not in ("cat", "dog")) for q in drawn}
    assert positions == {0, 1, 2}  # position says nothing
    assert drawn == [NegativeQueries(POOL, fraction=1.0, seed=3)(index, ["cat", "dog"]) for index in range(40)]
    next_epoch = NegativeQueries(POOL, fraction=1.0, seed=3, epoch=1)
    assert any(next_epoch(index, ["cat", "dog"]) != drawn[index] for index in range(40))  # each epoch draws anew
    assert NegativeQueries(POOL, fraction=0.0)(0, ["cat", "dog"]) == ["cat", "dog"]
    half = sum(len(NegativeQueries(POOL, fraction=0.5)(i, ["cat"])) == 2 for i in range(400))
    assert 160 < half < 240  # about half, binomial(400, 0.5) within 4 standard deviations
    with pytest.raises(ValueError, match="fraction"):
        NegativeQueries(POOL, fraction=1.5)


def test_hard_negatives_share_a_word_with_a_present_class_and_leave_plain_draws_unchanged():
    pool = ("red disc", "red ring", "blue disc", "blue ring", "green cross", "yellow cross")
    hard = NegativeQueries(pool, fraction=1.0, seed=1, hard=1.0)
    for index in range(40):
        queries = hard(index, ["red disc", "green cross"])
        (absent,) = [name for name in queries if name not in ("red disc", "green cross")]
        assert absent in ("red ring", "blue disc", "yellow cross")  # each shares "red", "disc" or "cross"
    # With no word-sharing class absent, any absent class will do.
    assert "blue ring" in NegativeQueries(("red disc", "blue ring"), fraction=1.0, hard=1.0)(0, ["red disc"])
    plain = NegativeQueries(pool, fraction=1.0, seed=1)
    # A run with hard=0 draws exactly what runs made before the option did (no extra random draw).
    assert [plain(i, ["red disc", "green cross"]) for i in range(40)] == [
        NegativeQueries(pool, 1.0, 1, 0, 0.0)(i, ["red disc", "green cross"]) for i in range(40)
    ]
    mixed = NegativeQueries(pool, fraction=1.0, seed=1, hard=0.5)
    shared = sum(
        shares_word(next(n for n in mixed(i, ["blue ring"]) if n != "blue ring"), ["blue ring"]) for i in range(400)
    )
    # hard=0.5 on top of a random draw that shares a word 2 times in 5: 0.5 + 0.5 * 0.4 = 0.7 of 400
    assert 250 < shared < 310
    with pytest.raises(ValueError, match="hard"):
        NegativeQueries(pool, fraction=1.0, hard=2.0)
    with pytest.raises(ValueError, match="set --negative-fraction too"):
        TrainConfig(hard_negatives=0.5)


def test_more_negatives_per_sample_add_distinct_absent_classes_and_keep_the_first_draw():
    pool = ("red disc", "red ring", "blue disc", "blue ring", "green cross", "yellow cross")
    present = ["red disc", "green cross"]
    one = NegativeQueries(pool, fraction=1.0, seed=1, hard=1.0)
    two = NegativeQueries(pool, fraction=1.0, seed=1, hard=1.0, count=2)
    for index in range(40):
        queries = two(index, present)
        absent = [name for name in queries if name not in present]
        assert len(absent) == len(set(absent)) == 2
        assert set(absent) <= {"red ring", "blue disc", "yellow cross"}  # hard: each shares a word with a present one
        assert set(one(index, present)) < set(queries)  # the first absent class is the one count=1 draws
    # The pool runs out: only the classes left are added.
    assert sorted(NegativeQueries(("a b", "c d"), fraction=1.0, count=3)(0, ["a b"])) == ["a b", "c d"]
    with pytest.raises(ValueError, match="count"):
        NegativeQueries(pool, fraction=1.0, count=0)
    with pytest.raises(ValueError, match="negatives_per_sample"):
        TrainConfig(negative_fraction=0.5, negatives_per_sample=0)


def test_collate_gives_a_negative_an_empty_target_and_marks_it_absent():
    negatives = NegativeQueries(POOL, fraction=1.0, seed=0)
    records = [record(0, ["cat", "dog"]), record(1, ["sofa"])]
    batch = collate(records, FixedEmbedder(), negatives=negatives)
    for b, source in enumerate(records):
        queries = batch.classes[b]
        assert queries == negatives(source.index, source.classes)
        for slot, name in enumerate(queries):
            assert bool(batch.present[b, slot]) == (name in source.classes)
            assert bool(batch.valid[b, slot])
            expected = source.masks[source.classes.index(name)] if name in source.classes else np.zeros((32, 32))
            assert torch.equal(batch.targets[b, slot], torch.from_numpy(expected).float())
            assert torch.equal(batch.embeddings[b, slot], FixedEmbedder()([name])[0])
    assert not batch.valid[1, 2] and not batch.present[1, 2]  # the second image's padding slot


def test_a_model_with_token_queries_and_word_targets_trains_loads_grounds_and_answers_absent_queries(
    small_sets, tmp_path
):
    run = tiny_run(small_sets, tmp_path / "tokens", subtract_others=True, answer_rule="score")
    # With word targets: each name token is also taught its word's objects.
    run = TrainConfig(**{**vars(run), "model": {**run.model, "class_queries": "tokens"}, "word_loss": 1.0})
    report = train(run)
    model, meta = load_grounding_model(report.out / "best")
    assert model.config.class_queries == "tokens" and meta.val["answer_rule"]["set"] == run.val
    assert meta.train_config["word_loss"] == 1.0
    # The loop trained the word term: each epoch logs its own (unweighted) loss, in history.csv too.
    assert all(row["word_loss"] > 0 for row in report.history)
    assert "word_loss" in (report.out / "history.csv").read_text().splitlines()[0].split(",")
    # The run ended by fitting an answer score (`answer_rule: score`), and the model answers by it.
    assert meta.val["answer_rule"]["rule"] == "score"
    assert model.config.answer_weights == tuple(meta.val["answer_rule"]["answer_weights"])
    embedder = ClassEmbedder.for_checkpoint(meta, *load_text_components(meta.text_model))
    assert embedder.tokens and embedder(["pottedplant", "dog"]).shape[:2] == (2, 3)  # pot|ted|plant
    pool = set_classes(GroundingDataset([small_sets["val"]], features=False))
    absent = evaluate_absent_queries(model, open_set(str(small_sets["test-seen"])), embedder, pool)
    assert absent["queries"]["absent"] == 4 and absent["queries"]["present"] == 8
    result = ground(load_pipeline("tiny-sd1"), model, meta, "a photograph of a dog and a sofa", objects=["dog", "sofa"])
    assert set(result.masks) == {"dog", "sofa"} and result.presence is not None


def with_presence(inputs: str = "statistics"):
    return TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "presence_head": True, "presence_inputs": inputs})


@pytest.mark.parametrize("inputs", ["statistics", "region"])
def test_the_presence_head_answers_per_query_and_leaves_the_masks_alone(inputs):
    plain = tiny_model()
    with_head = tiny_model(with_presence(inputs))
    maps, queries = features(TINY_SHAPES, 2), embeddings(2, 3)
    with torch.no_grad():
        output = with_head.answer(maps, queries)
        assert output.presence is not None and output.presence.shape == (2, 3)
        assert torch.equal(with_head(maps, queries), output.logits)
        assert plain.answer(maps, queries).presence is None
        single = with_head.answer({k: v[:1] for k, v in maps.items()}, queries[:1]).presence
    assert torch.allclose(single, output.presence[:1], atol=1e-5)
    assert sum(p.numel() for p in with_head.parameters()) - sum(p.numel() for p in plain.parameters()) == (
        sum(p.numel() for p in with_head.presence_head.parameters())
    )


def test_presence_loss_is_the_mean_bce_over_valid_queries():
    presence = torch.tensor([[2.0, -1.0, 5.0], [0.0, 3.0, -4.0]])
    present = torch.tensor([[True, False, True], [False, True, False]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    by_hand = [
        np.log1p(np.exp(-2.0)),
        np.log1p(np.exp(-1.0)),
        np.log(2.0),
        np.log1p(np.exp(-3.0)),
        np.log1p(np.exp(-4)),
    ]
    assert presence_loss(presence, present, valid).item() == pytest.approx(np.mean(by_hand), rel=1e-6)
    with pytest.raises(ValueError, match="one"):
        presence_loss(presence, present[:, :2], valid)


def test_wilson_interval_matches_published_values():
    # Wilson 95 % intervals: 0/10 → [0, 0.2775], 10/10 → [0.7225, 1], 50/100 → [0.4038, 0.5962].
    assert proportion_ci95(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert proportion_ci95(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert proportion_ci95(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    with pytest.raises(ValueError, match="successes"):
        proportion_ci95(3, 2)


class ScriptedModel(torch.nn.Module):
    """Paints every query's mask fully; with `presence`, says present only for the named classes."""

    def __init__(self, present: set[str] | None, pool: tuple[str, ...] = POOL) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.present = present
        self.pool = pool
        self.presence_head = None if present is None else torch.nn.Identity()  # only tested for None
        self.config = TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "mask_size": 32})

    found = GroundingModel.found  # the answer rule of the real model, read from `config`

    def answer(self, maps, queries, padding=None):
        from groundiff.model import GroundingOutput

        logits = torch.full((*queries.shape[:2], 32, 32), 10.0)
        if self.present is None:
            return GroundingOutput(logits, None)
        names = [[self.pool[int(v)] for v in row[:, 0].tolist()] for row in queries]
        presence = torch.tensor([[5.0 if n in self.present else -5.0 for n in row] for row in names])
        return GroundingOutput(logits, presence)


def test_n_acc_and_t_acc_count_not_found_answers():
    dataset = [record(i, pair) for i, pair in enumerate([["cat", "dog"], ["dog", "sofa"], ["cat", "sofa"]])]
    absent = ("train", "bus")  # in no image
    paints_everything = evaluate_absent_queries(ScriptedModel(None), dataset, FixedEmbedder(), absent)
    assert paints_everything["n_acc"] == 0.0 and paints_everything["t_acc"] == 100.0
    assert paints_everything["queries"] == {"absent": 3, "absent_empty": 0, "present": 6, "present_nonempty": 6}
    knows = evaluate_absent_queries(ScriptedModel({"cat", "dog", "sofa"}), dataset, FixedEmbedder(), absent)
    assert knows["n_acc"] == 100.0 and knows["t_acc"] == 100.0
    assert knows["miou"] == pytest.approx(paints_everything["miou"])  # present queries scored alike
    misses_cat = evaluate_absent_queries(ScriptedModel({"dog", "sofa"}), dataset, FixedEmbedder(), absent)
    assert misses_cat["t_acc"] == pytest.approx(100 * 4 / 6)
    assert misses_cat["t_acc_bound"] == 100.0  # its masks paint the cat: a rule that did not read presence finds it
    assert misses_cat["per_class"]["cat"] == 0.0  # "not found" for a present object scores as an empty mask
    with pytest.raises(ValueError, match="names every class"):
        evaluate_absent_queries(ScriptedModel(None), dataset, FixedEmbedder(), ("cat", "dog"))


def test_the_ceiling_is_the_best_rule_on_the_set_itself_and_leaves_the_answers_alone():
    dataset = [record(i, pair) for i, pair in enumerate([["cat", "dog"], ["dog", "sofa"], ["cat", "sofa"]])]
    absent = ("train", "bus")
    knows = ScriptedModel({"cat", "dog", "sofa"})
    plain = evaluate_absent_queries(knows, dataset, FixedEmbedder(), absent)
    with_ceiling = evaluate_absent_queries(knows, dataset, FixedEmbedder(), absent, ceiling_t_acc=98.0)
    assert {key: value for key, value in with_ceiling.items() if key != "ceiling"} == plain
    ceiling = with_ceiling["ceiling"]
    assert (ceiling["n_acc"], ceiling["t_acc"], ceiling["min_t_acc"]) == (100.0, 100.0, 98.0)
    # Every mask covers the whole image and ties go to the first query, so any own share above 0 turns
    # away all queries but the first of each image: at T-acc >= 98 only "no contest" (N-acc 0) qualifies;
    # with no floor, the best rule turns away every absent query not asked first.
    paints = ScriptedModel(None)
    strict = evaluate_absent_queries(paints, dataset, FixedEmbedder(), absent, ceiling_t_acc=98.0)["ceiling"]
    assert (strict["n_acc"], strict["t_acc"], strict["min_own_share"]) == (0.0, 100.0, 0.0)
    lax = evaluate_absent_queries(paints, dataset, FixedEmbedder(), absent, ceiling_t_acc=0.0)["ceiling"]
    first = [NegativeQueries(absent, fraction=1.0)(i, r.classes)[0] in absent for i, r in enumerate(dataset)]
    assert lax["n_acc"] == pytest.approx(100 * (3 - sum(first)) / 3) and lax["min_own_share"] > 0


def test_n_acc_is_split_by_whether_the_absent_class_shares_a_word_with_a_present_one():
    pool = ("red disc", "blue ring", "red ring", "green cross")
    dataset = [record(0, ["red disc", "blue ring"]), record(1, ["red disc", "blue ring"])]
    # Absent: "red ring" shares words with both present objects, "green cross" with none.
    fooled_by_words = ScriptedModel({"red disc", "blue ring", "red ring"}, pool)
    scores = evaluate_absent_queries(fooled_by_words, dataset, FixedEmbedder(pool), ("red ring", "green cross"), seed=1)
    # Seed 1 asks image 0 for "green cross" and image 1 for "red ring" (one of each).
    by_word = scores["n_acc_by_word"]
    assert by_word["share a word"] == {"n_acc": 0.0, "n_acc_ci95": pytest.approx([0.0, 79.35], abs=0.01), "queries": 1}
    assert by_word["share no word"]["n_acc"] == 100.0 and by_word["share no word"]["queries"] == 1
    # "red ring" beside a red disc and a blue ring: each of its words names a present object, neither both.
    assert by_word["every word present"] == by_word["share a word"]
    assert scores["n_acc"] == 50.0


def test_a_name_has_every_word_present_only_when_its_words_spread_over_the_other_names():
    from groundiff.evaluation.absent import has_every_word

    assert has_every_word("red disc", ["red ring", "blue disc"])
    assert not has_every_word("red disc", ["red ring", "blue cross"])  # shares a word, not every word
    assert not has_every_word("red disc", ["red disc"])  # the class itself is no other object
    assert not has_every_word("dog", ["dog", "cat"])  # a one-word name has nothing to bind


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory, sd1_pipe) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("absent")
    for kind, size in {"train": 8, "val": 4, "test-seen": 4}.items():
        generate(config(root / kind, set=kind, num_samples=size, samples_per_shard=8), sd1_pipe)
    return {kind: root / kind for kind in ("train", "val", "test-seen")}


def tiny_run(sets: dict[str, Path], out: Path, **overrides) -> TrainConfig:
    """One epoch of a tiny model with negatives (half of the samples) on the small sets."""
    tiny = {"level_channels": [4, 4, 8, 8], "width": 32, "heads": 2, "decoder_layers": 1, "ffn_width": 64}
    return TrainConfig(
        train=str(sets["train"]),
        val=str(sets["val"]),
        out=str(out),
        epochs=1,
        model=tiny,
        negative_fraction=0.5,
        progress=False,
        **overrides,
    )


def test_training_with_negatives_records_a_presence_head_that_loads(small_sets, tmp_path):
    run = tiny_run(small_sets, tmp_path / "run")
    report = train(run)
    model, meta = load_grounding_model(report.out / "best")
    assert model.presence_head is not None and meta.model_config["presence_head"] is True
    assert meta.train_config["negative_fraction"] == 0.5
    # The run chose its answer rule on its validation set: the best N-acc among rules with T-acc >= 99.
    rule = meta.val["answer_rule"]
    assert rule["set"] == run.val and len(rule["grid"]) == len(PRESENCE_THRESHOLDS) * len(OWN_SHARES)
    assert (model.config.presence_threshold, model.config.min_own_share) == (
        rule["presence_threshold"],
        rule["min_own_share"],
    )
    eligible = [row for row in rule["grid"] if row["t_acc"] >= MIN_T_ACC]
    if eligible:
        assert rule["t_acc"] >= MIN_T_ACC and rule["n_acc"] == max(row["n_acc"] for row in eligible)
    else:  # no rule reaches the floor: the laxest
        assert rule["t_acc"] == max(row["t_acc"] for row in rule["grid"])

    # `tune-answers` rewrites the rule (without a T-acc floor: the highest N-acc), leaves the weights, and
    # evaluating the tuned checkpoint on the same set gives the figures it chose by.
    tuned = tmp_path / "tuned"
    save_checkpoint(tuned, model, meta)
    assert main(["tune-answers", "--checkpoint", str(tuned), "--min-t-acc", "0"]) == 0
    retuned, retuned_meta = load_grounding_model(tuned)
    chosen = retuned_meta.val["answer_rule"]
    assert chosen["n_acc"] == max(row["n_acc"] for row in chosen["grid"])
    weights = zip(retuned.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    embedder = ClassEmbedder.for_checkpoint(retuned_meta, *load_text_components(retuned_meta.text_model))
    pool = set_classes(GroundingDataset([small_sets["val"]], features=False))
    again = evaluate_absent_queries(retuned, open_set(str(small_sets["val"])), embedder, pool)
    assert (again["n_acc"], again["t_acc"]) == (chosen["n_acc"], chosen["t_acc"])
    assert again["rule"] == {key: chosen[key] for key in ("presence_threshold", "min_own_share", "answer_weights")}
    # The ceiling on the tuning set at the tuning floor is the tuned rule itself.
    ceiling = evaluate_absent_queries(retuned, open_set(str(small_sets["val"])), embedder, pool, ceiling_t_acc=0.0)
    assert (ceiling["ceiling"]["n_acc"], ceiling["ceiling"]["t_acc"]) == (chosen["n_acc"], chosen["t_acc"])
    # The same with an answer score: the checkpoint keeps the fitted weights, evaluation answers by them,
    # and the score's best threshold on its own tuning set is the one it chose.
    assert main(["tune-answers", "--checkpoint", str(tuned), "--min-t-acc", "0", "--rule", "score"]) == 0
    scored, scored_meta = load_grounding_model(tuned)
    fitted = scored_meta.val["answer_rule"]
    assert fitted["rule"] == "score" and scored.config.answer_weights == tuple(fitted["answer_weights"])
    assert (scored.config.presence_threshold, scored.config.min_own_share) == (0.0, 0.0)
    again = evaluate_absent_queries(scored, open_set(str(small_sets["val"])), embedder, pool, ceiling_t_acc=0.0)
    assert (again["n_acc"], again["t_acc"]) == (fitted["n_acc"], fitted["t_acc"])
    assert (again["ceiling"]["n_acc"], again["ceiling"]["t_acc"]) == (fitted["n_acc"], fitted["t_acc"])
    without = TrainConfig(**{**vars(run), "out": str(tmp_path / "plain"), "negative_fraction": 0.0})
    plain, _ = load_grounding_model(train(without).out / "best")
    assert plain.presence_head is None

    # A presence output that says "absent" for everything: `ground` answers "not found" with empty masks,
    # the CLI says so, and `evaluate --absent-queries` reports N-acc 100.
    with torch.no_grad():
        model.presence_head.mlp[-1].bias.fill_(-1e4)
    sd1 = load_pipeline("tiny-sd1")
    result = ground(sd1, model, meta, "a photograph of a dog and a sofa", objects=["dog", "sofa"])
    assert result.found == {"dog": False, "sofa": False} and not any(m.any() for m in result.masks.values())
    assert result.presence is not None and max(result.presence.values()) < 1e-6
    save_checkpoint(tmp_path / "never", model, meta)
    out = tmp_path / "absent.json"
    arguments = ["--checkpoint", str(tmp_path / "never"), "--data", str(small_sets["test-seen"]), "--out", str(out)]
    assert main(["evaluate", *arguments, "--absent-queries"]) == 0
    absent = json.loads(out.read_text())["test-seen"]["absent"]
    assert absent["n_acc"] == 100.0 and absent["t_acc"] == 0.0 and absent["queries"]["absent"] == 4


def test_an_object_that_keeps_too_little_of_its_mask_against_the_others_is_not_found():
    logits = torch.full((1, 3, 8, 8), -10.0)
    logits[0, 0, :4, :4] = 4.0  # the first object
    logits[0, 1, :4, :4] = 2.0  # a second query paints it too, less sure,
    logits[0, 1, :4, 4] = 2.0  # and 4 pixels of its own: it keeps 4 of its 20
    logits[0, 2, 4:, 4:] = 3.0  # a third object elsewhere
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert found_queries(logits, None, valid).tolist() == [[True, True, True]]  # no contest
    assert found_queries(logits, None, valid, min_own_share=0.5).tolist() == [[True, False, True]]
    assert found_queries(logits, None, valid, min_own_share=0.1).tolist() == [[True, True, True]]
    asked_alone = torch.tensor([[False, True, True]])  # the stronger query is padding: nothing to lose to
    assert found_queries(logits, None, asked_alone, min_own_share=0.5).tolist() == [[False, True, True]]
    presence = torch.tensor([[2.0, 0.0, -2.0]])  # probabilities 0.88, 0.5, 0.12
    assert found_queries(logits, presence, valid).tolist() == [[True, False, False]]
    assert found_queries(logits, presence, valid, presence_threshold=0.1).tolist() == [[True, True, True]]
    model = build_grounding_model(
        TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "min_own_share": 0.5}), TINY_SHAPES, TEXT_WIDTH, image_size=8
    )
    assert model.found(GroundingOutput(logits, None)).tolist() == [[True, False, True]]  # the config's rule
    with pytest.raises(ValueError, match="min_own_share"):
        TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "min_own_share": 1.5})


def test_a_checkpoint_without_the_field_loads_without_a_head():
    model = build_grounding_model(TINY_CONFIG, TINY_SHAPES, TEXT_WIDTH, image_size=32)
    data = model.config.to_dict()
    data.pop("presence_head")  # checkpoints written before the presence head existed
    assert TINY_CONFIG.__class__.from_dict(data).presence_head is False


def test_a_negative_query_is_learnt_with_bce_alone():
    from groundiff.training.losses import bce_loss, grounding_loss

    logits = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.zeros(1, 2, 8, 8)
    targets[0, 0, 2:5, 2:5] = 1
    valid = torch.ones(1, 2, dtype=torch.bool)
    present = torch.tensor([[True, False]])
    mixed = grounding_loss("bce+logcosh-dice", logits, targets, valid, present)
    by_hand = (
        grounding_loss("bce+logcosh-dice", logits[:, :1], targets[:, :1], valid[:, :1])
        + bce_loss(logits[0, 1:], targets[0, 1:])[0]
    ) / 2
    assert mixed.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert grounding_loss("bce+logcosh-dice", logits, targets, valid, valid).item() == pytest.approx(
        grounding_loss("bce+logcosh-dice", logits, targets, valid).item()
    )


@pytest.mark.parametrize("inputs", ["statistics", "region"])
def test_the_presence_loss_never_reaches_the_mask_layers(inputs):
    # Regression: through the shared decoder the presence loss took it over and cost the masks ~10 points.
    model = tiny_model(with_presence(inputs)).train()
    output = model.answer(features(TINY_SHAPES, 2), embeddings(2, 3))
    output.presence.sum().backward()
    reached = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert reached and all(name.startswith("presence_head.") for name in reached)
    if inputs == "region":
        assert any(name.startswith("presence_head.shape_reader.") for name in reached)


def test_a_region_presence_head_reads_what_lies_under_the_mask():
    from groundiff.model import PresenceHead

    head = PresenceHead(channels=4, inputs="region")
    embeddings = torch.zeros(1, 2, 4)
    coarse = torch.full((1, 2, 4, 4), -20.0)
    coarse[0, 0, :2, :2] = 20.0  # query 0 covers the top-left corner, query 1 the bottom-right
    coarse[0, 1, 2:, 2:] = 20.0
    features = torch.zeros(1, 4, 4, 4)
    features[0, 0, :2, :2] = 1.0  # something there
    upsampled = torch.nn.functional.interpolate(coarse, size=(8, 8))
    with torch.no_grad():
        head.mlp[0].weight.zero_()
        head.mlp[0].bias.zero_()
        head.mlp[0].weight[0, 4 + 3] = 1.0  # hidden unit 0 reads the region's first feature channel
        head.mlp[2].weight.fill_(1.0)
        presence = head(embeddings, upsampled, features, coarse)
    assert presence[0, 0] > presence[0, 1] + 0.9  # same statistics, only the region differs
    with pytest.raises(ValueError, match="needs mask_features"):
        head(embeddings, upsampled)
    with pytest.raises(ValueError, match="presence inputs 'pixels'"):
        PresenceHead(channels=4, inputs="pixels")


def _trained_as(model: dict, config: TrainConfig) -> bool:
    """Whether a measured model of docs/results/queries_fresh.json was trained with `config`'s settings
    for negatives, subtraction, run length, presence output, class queries, word targets and answer rule
    (seed aside)."""
    recipe = {
        "negative_fraction": config.negative_fraction,
        "hard_negatives": config.hard_negatives,
        "negatives_per_sample": config.negatives_per_sample,
        "mine_negatives": config.mine_negatives,
        "subtract_others": config.subtract_others,
        "run_epochs": config.epochs,
        "presence_inputs": config.model.get("presence_inputs", "statistics"),
        "class_queries": config.model.get("class_queries", "mean"),
        "word_loss": config.word_loss,
    }
    # Rows measured before an option existed lack its key and were trained with its default.
    defaults = {"negatives_per_sample": 1, "mine_negatives": False, "class_queries": "mean", "word_loss": 0.0}
    rule = "score" if model["answer_rule"].get("answer_weights") else "grid"
    same_rule = rule == config.answer_rule
    return same_rule and all(model.get(key, defaults.get(key)) == value for key, value in recipe.items())


def _meets_item_one(row: dict, kind: str, seed: int, measured: dict) -> bool:
    """The second confirmation's test of one truth set: N-acc >= 95, T-acc >= 98 and present-object mIoU no more
    than a point below the better model without negatives (mean queries; words alone of the same seed)."""
    floor = max(
        measured["subtract-20-epochs"]["sets"][kind]["miou"],
        measured[f"word-queries-no-negatives-15-epochs-seed-{seed}"]["sets"][kind]["miou"],
    )
    return row["absent"]["n_acc"] >= 95 and row["absent"]["t_acc"] >= 98 and row["miou"] >= floor - 1


def test_the_absent_objects_recipe_is_the_one_the_docs_measured():
    """configs/models/absent-objects.yaml, the recipe docs/RESULTS.md names, holds the settings of
    replicate runs measured in docs/results/queries_fresh.json (three seeds), so that its command
    repeats them."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    recipe = read_config_file(repository / "src/groundiff/configs/models/absent-objects.yaml")  # as --config reads it
    shipped = read_config_file(repository / "src/groundiff/configs/models/miniworld-grounding.yaml")
    config = TrainConfig(**recipe)
    # The shipped checkpoint's recipe with more epochs: every other field it sets is the same.
    assert {k: v for k, v in recipe.items() if k in shipped and k != "epochs"} == {
        k: v for k, v in shipped.items() if k != "epochs"
    }
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    seeds = {model["train_seed"] for model in measured.values() if _trained_as(model, config)}
    assert len(seeds) >= 3, f"docs/results/queries_fresh.json measures the recipe {recipe} with seeds {seeds} only"


def test_the_words_alone_recipe_won_on_validation_data_for_every_seed():
    """configs/models/absent-objects-words.yaml replaced absent-objects.yaml as the recipe on what a user has, the
    generated validation set (README now names the mined 30-epoch runs that replaced it in turn, the same way):
    every measured seed of it has a higher validation mIoU than every regenerated mean-query run, and a
    validation N-acc at the 99 % floor no lower than theirs."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    configs = repository / "src/groundiff/configs/models"
    words = TrainConfig(**read_config_file(configs / "absent-objects-words.yaml"))
    assert words.model["class_queries"] == "words" and words.answer_rule == "score"
    recipe = "configs/models/absent-objects-word-queries-mined.yaml --epochs 30"
    assert recipe in (repository / "README.md").read_text()
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    own_rule = [m for m in measured.values() if _trained_as(m, words) and m["answer_rule"]["tuned_on"].endswith("/val")]
    runs = {m["train_seed"]: m for m in own_rule}  # each run's own rule, fitted on its generated validation set
    assert sorted(runs) == list(range(7))
    mean = [measured[f"subtract-all-hard-negatives-30-epochs-seed-{seed}-regenerated"] for seed in (0, 1)]
    for seed, run in runs.items():
        assert run["val_miou"] > max(m["val_miou"] for m in mean), seed
        assert run["answer_rule"]["validation"]["n_acc"] >= max(m["answer_rule"]["validation"]["n_acc"] for m in mean)
    # The docs quote the range by seeds 3 and 6 and the lowest validation N-acc by seed 5.
    by_miou = sorted(runs, key=lambda seed: runs[seed]["val_miou"])
    assert (by_miou[0], by_miou[-1]) == (3, 6)
    assert min(runs, key=lambda seed: runs[seed]["answer_rule"]["validation"]["n_acc"]) == 5


def test_every_negative_a_hard_one_gains_n_acc_on_every_set_for_every_seed():
    """docs/RESULTS.md's reason for the recipe's all-hard negatives: each seed's all-hard run answers
    more absent queries empty, on every fresh truth set, than the half-hard run of the same seed."""
    measured = json.loads((Path(__file__).parents[1] / "docs/results/queries_fresh.json").read_text())["models"]
    half_hard = {  # seed 0's half-hard run on the same (regenerated) training set is the rerun
        0: "subtract-hard-negatives-30-epochs-seed-0-rerun",
        1: "subtract-hard-negatives-30-epochs-seed-1",
        2: "subtract-hard-negatives-30-epochs-seed-2",
    }
    for seed, name in half_hard.items():
        all_hard = measured[f"subtract-all-hard-negatives-30-epochs-seed-{seed}"]
        assert (all_hard["train_seed"], measured[name]["train_seed"]) == (seed, seed)
        assert (all_hard["hard_negatives"], measured[name]["hard_negatives"]) == (1.0, 0.5)
        for kind, row in all_hard["sets"].items():
            assert row["absent"]["n_acc"] > measured[name]["sets"][kind]["absent"]["n_acc"], (seed, kind)


def test_the_answer_score_gains_t_acc_on_renders_with_unseen_classes_for_both_regenerated_seeds():
    """docs/RESULTS.md's case for `--rule score`: on the same weights, it answers more present objects of
    mixed and unseen renders than the grid rule, for both seeds, at no cost in present-object mIoU."""
    measured = json.loads((Path(__file__).parents[1] / "docs/results/queries_fresh.json").read_text())["models"]
    for seed in (0, 1):
        grid = measured[f"subtract-all-hard-negatives-30-epochs-seed-{seed}-regenerated"]
        score = measured[f"subtract-all-hard-negatives-30-epochs-seed-{seed}-regenerated-answer-score"]
        assert grid["answer_rule"]["answer_weights"] is None and score["answer_rule"]["answer_weights"] is not None
        for kind in ("truth-test-mixed", "truth-test-unseen"):
            gained = score["sets"][kind]["absent"]["t_acc"] - grid["sets"][kind]["absent"]["t_acc"]
            assert gained > 1.0, (seed, kind, gained)
            assert score["sets"][kind]["miou"] >= grid["sets"][kind]["miou"], (seed, kind)


def test_word_targets_meet_the_target_on_seen_renders_and_break_unseen_classes_for_both_seeds():
    """docs/RESULTS.md's reading of configs/models/absent-objects-word-targets.yaml, measured on both seeds:
    on seen renders it meets the issue's target (N-acc >= 95 at T-acc >= 98), while on unseen renders
    present-object mIoU falls more than 20 points below the mean-query recipe's and more than one
    present object in ten gets an empty mask, so it cannot be the recipe."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    config = TrainConfig(
        **read_config_file(repository / "src/groundiff/configs/models/absent-objects-word-targets.yaml")
    )
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    for seed in (0, 1):
        words = measured[f"subtract-all-hard-negatives-token-queries-word-targets-30-epochs-seed-{seed}"]
        assert _trained_as(words, config) and words["train_seed"] == seed
        mean = measured[f"subtract-all-hard-negatives-30-epochs-seed-{seed}-regenerated-answer-score"]
        seen = words["sets"]["truth-test-seen"]["absent"]
        assert seen["n_acc"] >= 95 and seen["t_acc"] >= 98, (seed, seen["n_acc"], seen["t_acc"])
        unseen = words["sets"]["truth-test-unseen"]
        assert unseen["miou"] < mean["sets"]["truth-test-unseen"]["miou"] - 20, seed
        assert unseen["absent"]["t_acc_bound"] < 90, seed


def test_the_word_queries_probe_gains_unseen_miou_over_contextual_word_targets_on_both_seeds():
    """docs/RESULTS.md's probe of configs/models/absent-objects-word-queries-probe.yaml: encoding each word
    alone raises unseen present-object mIoU by more than 10 points over the contextual word-target runs
    for both seeds, while the unseen bound stays at or below 95 for at least one seed (half of the
    pre-registered reading holds)."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    probe = read_config_file(repository / "src/groundiff/configs/models/absent-objects-word-queries-probe.yaml")
    config = TrainConfig(**probe)
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    bounds = []
    for seed in (0, 1):
        words = measured[f"subtract-all-hard-negatives-word-queries-word-targets-15-epochs-seed-{seed}"]
        assert _trained_as(words, config) and words["class_queries"] == "words"
        contextual = measured[f"subtract-all-hard-negatives-token-queries-word-targets-30-epochs-seed-{seed}"]
        unseen = words["sets"]["truth-test-unseen"]
        assert unseen["miou"] > contextual["sets"]["truth-test-unseen"]["miou"] + 10, seed
        bounds.append(unseen["absent"]["t_acc_bound"])
    assert min(bounds) <= 95, bounds


def test_word_queries_at_full_length_meet_the_target_on_seen_renders_and_leave_unseen_objects_without_masks():
    """docs/RESULTS.md's reading of configs/models/absent-objects-word-queries.yaml on three seeds: every
    seed meets the target on seen renders, but on unseen renders more than 2 % of present objects get no
    mask at all (so no rule reaches T-acc 98) and present-object mIoU stays more than 5 points below the
    model without negatives and the mean-query recipe: item 1 stays unmet there."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    config = TrainConfig(
        **read_config_file(repository / "src/groundiff/configs/models/absent-objects-word-queries.yaml")
    )
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    without_negatives = measured["subtract-20-epochs"]["sets"]["truth-test-unseen"]["miou"]
    for seed in (0, 1, 2):
        words = measured[f"subtract-all-hard-negatives-word-queries-word-targets-30-epochs-seed-{seed}"]
        assert _trained_as(words, config) and words["train_seed"] == seed
        seen = words["sets"]["truth-test-seen"]["absent"]
        assert seen["n_acc"] >= 95 and seen["t_acc"] >= 98, (seed, seen["n_acc"], seen["t_acc"])
        unseen = words["sets"]["truth-test-unseen"]
        assert unseen["absent"]["t_acc_bound"] < 98, seed
        assert unseen["miou"] < without_negatives - 5, seed
        if seed in (0, 1):
            mean = measured[f"subtract-all-hard-negatives-30-epochs-seed-{seed}-regenerated-answer-score"]
            assert unseen["miou"] < mean["sets"]["truth-test-unseen"]["miou"] - 5, seed


def test_words_alone_without_word_targets_beat_the_probe_on_unseen_classes_for_both_seeds():
    """docs/RESULTS.md's control of the word-queries probe (configs/models/absent-objects-words.yaml, no word
    targets): for both seeds it gives more present unseen objects a mask and
    higher unseen mIoU than the probe with word targets (so these get no credit), above the mean-query
    recipe and the model without negatives; and seed 0 meets the issue's target on every truth set."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    control = read_config_file(repository / "src/groundiff/configs/models/absent-objects-words.yaml")
    config = TrainConfig(**control)
    assert config.word_loss == 0 and config.model["class_queries"] == "words"
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    without_negatives = measured["subtract-20-epochs"]["sets"]
    for seed in (0, 1):
        words = measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]
        assert _trained_as(words, config) and words["train_seed"] == seed
        probe = measured[f"subtract-all-hard-negatives-word-queries-word-targets-15-epochs-seed-{seed}"]
        mean = measured[f"subtract-all-hard-negatives-30-epochs-seed-{seed}-regenerated-answer-score"]
        unseen, probe_unseen = words["sets"]["truth-test-unseen"], probe["sets"]["truth-test-unseen"]
        assert unseen["absent"]["t_acc_bound"] > probe_unseen["absent"]["t_acc_bound"] + 2, seed
        assert unseen["miou"] > probe_unseen["miou"] + 10, seed
        baselines = (mean["sets"]["truth-test-unseen"]["miou"], without_negatives["truth-test-unseen"]["miou"])
        assert unseen["miou"] > max(baselines), seed
    first = measured["subtract-all-hard-negatives-word-queries-15-epochs-seed-0"]["sets"]
    for kind, row in first.items():
        assert row["absent"]["n_acc"] >= 95 and row["absent"]["t_acc"] >= 98, kind
        assert row["miou"] >= without_negatives[kind]["miou"] - 1, kind


def test_the_words_alone_confirmation_fails_on_the_truth_val_rule_while_every_ceiling_passes_95():
    """docs/RESULTS.md's pre-registered confirmation of the words-alone control: the rule fitted on the
    truth validation set at T-acc 98 misses T-acc 98 on mixed renders for seeds 0 and 1 (so item 1 is not
    met), while each seed's own score, thresholded on the test set itself, keeps N-acc above 95 at T-acc
    98 on every truth set: the weights could meet the target, the choice of threshold does not."""
    measured = json.loads((Path(__file__).parents[1] / "docs/results/queries_fresh.json").read_text())["models"]
    for seed in (0, 1):
        name = f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"
        confirmed = measured[f"{name}-truth-val-98"]
        assert confirmed["answer_rule"]["tuned_on"].endswith("truth-val") and confirmed["train_seed"] == seed
        assert confirmed["sets"]["truth-test-mixed"]["absent"]["t_acc"] < 98, seed
        for kind, row in measured[name]["sets"].items():
            ceiling = row["absent"]["ceiling"]
            assert ceiling["n_acc"] > 95 and ceiling["t_acc"] >= 98, (seed, kind)
    # Under the rule each run chose on its generated validation set: three seeds of four meet the target.
    without_negatives = measured["subtract-20-epochs"]["sets"]
    meets = {}
    for seed in (0, 1, 2, 3):
        sets = measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]["sets"]
        meets[seed] = all(
            row["absent"]["n_acc"] >= 95
            and row["absent"]["t_acc"] >= 98
            and row["miou"] >= without_negatives[kind]["miou"] - 1
            for kind, row in sets.items()
        )
    assert meets == {0: True, 1: False, 2: True, 3: True}


def test_the_words_alone_confirmation_on_fresh_seeds_fails_on_mixed_renders():
    """docs/RESULTS.md's second pre-registered confirmation of the words-alone control (fresh seeds 4-6, each
    run's own rule from its generated validation set): item 1 is met only if every seed, on every truth set,
    reaches N-acc >= 95 at T-acc >= 98 with present-object mIoU no more than a point below the better of
    the two models without negatives (mean queries; words alone, same seed). It is not: seed 5 misses N-acc
    on mixed renders, where even its ceiling passes 95 by little."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    configs = repository / "src/groundiff/configs/models"
    control = TrainConfig(**read_config_file(configs / "absent-objects-words.yaml"))
    alone = TrainConfig(**read_config_file(configs / "absent-objects-word-queries-no-negatives.yaml"))
    assert alone.negative_fraction == 0 and {**control.model} == {**alone.model}
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    mean_without = measured["subtract-20-epochs"]["sets"]
    meets = {}
    for seed in (4, 5, 6):
        words = measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]
        without = measured[f"word-queries-no-negatives-15-epochs-seed-{seed}"]
        assert _trained_as(words, control) and words["train_seed"] == seed
        assert (without["train_seed"], without["class_queries"], without["negative_fraction"]) == (seed, "words", 0)
        assert not without["presence_head"] and without["answer_rule"]["tuned_on"] is None
        meets[seed] = all(_meets_item_one(row, kind, seed, measured) for kind, row in words["sets"].items())
    assert meets == {4: True, 5: False, 6: True}
    mixed = measured["subtract-all-hard-negatives-word-queries-15-epochs-seed-5"]["sets"]["truth-test-mixed"]["absent"]
    assert mixed["ceiling"]["n_acc"] < 97, mixed["ceiling"]
    # What the negatives cost this query: at most a point of mIoU anywhere, a gain on unseen renders.
    for seed in (4, 5, 6):
        words = measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]["sets"]
        without = measured[f"word-queries-no-negatives-15-epochs-seed-{seed}"]["sets"]
        assert all(words[kind]["miou"] >= without[kind]["miou"] - 1 for kind in words), seed
        assert words["truth-test-unseen"]["miou"] > without["truth-test-unseen"]["miou"] + 1, seed
    # Over the seven seeds of the config, under each run's own rule (mean-query baseline): five of seven.
    own_rule = {
        seed: all(
            row["absent"]["n_acc"] >= 95
            and row["absent"]["t_acc"] >= 98
            and row["miou"] >= mean_without[kind]["miou"] - 1
            for kind, row in measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]["sets"].items()
        )
        for seed in range(7)
    }
    assert [seed for seed, met in own_rule.items() if not met] == [1, 5]


def test_thirty_epochs_of_words_alone_gain_masks_but_not_the_mixed_ceiling():
    """docs/RESULTS.md's pre-registered reading of the words-alone control continued to 30 epochs (seeds 4
    and 5): the mixed ceiling rises by less than a point for both seeds (so longer training does not count
    as help), seed 5 still misses mixed N-acc under its own rule, and present-object mIoU on mixed renders
    rises for both."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    control = TrainConfig(**read_config_file(repository / "src/groundiff/configs/models/absent-objects-words.yaml"))
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    for seed in (4, 5):
        short = measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]["sets"]
        long = measured[f"subtract-all-hard-negatives-word-queries-30-epochs-seed-{seed}"]
        assert _trained_as(long, dataclasses.replace(control, epochs=30)) and long["train_seed"] == seed
        mixed, short_mixed = long["sets"]["truth-test-mixed"], short["truth-test-mixed"]
        assert 0 < mixed["absent"]["ceiling"]["n_acc"] - short_mixed["absent"]["ceiling"]["n_acc"] < 1, seed
        assert mixed["miou"] > short_mixed["miou"], seed
        unseen_change = long["sets"]["truth-test-unseen"]["miou"] - short["truth-test-unseen"]["miou"]
        assert abs(unseen_change) < 1, (seed, unseen_change)
    assert (
        measured["subtract-all-hard-negatives-word-queries-30-epochs-seed-5"]["sets"]["truth-test-mixed"]["absent"][
            "n_acc"
        ]
        < 95
    )


def test_absent_names_whose_every_word_is_in_the_image_are_the_hardest_but_not_most_misses():
    """docs/RESULTS.md's third split of absent queries on mixed renders: words alone (seeds 4-6) turn away
    fewer of the names whose every word names a present object than of all word-sharing names, and more of
    them than the mean-query recipe does; yet most absent names they answer "found" share a single word."""
    measured = json.loads((Path(__file__).parents[1] / "docs/results/queries_fresh.json").read_text())["models"]
    recipe = measured["subtract-all-hard-negatives-30-epochs-seed-0-regenerated-answer-score"]["sets"]
    recipe_every = recipe["truth-test-mixed"]["absent"]["n_acc_by_word"]["every word present"]["n_acc"]
    for seed in (4, 5, 6):
        groups = measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]["sets"]["truth-test-mixed"]
        every, sharing = (groups["absent"]["n_acc_by_word"][group] for group in ("every word present", "share a word"))
        assert recipe_every < every["n_acc"] < sharing["n_acc"], seed
        missed = {
            name: round(group["queries"] * (1 - group["n_acc"] / 100))
            for name, group in (("every", every), ("sharing", sharing))
        }
        assert missed["sharing"] - missed["every"] > missed["every"], (seed, missed)


def test_negatives_in_every_sample_for_words_alone_read_as_pre_registered():
    """docs/RESULTS.md's pre-registered reading of configs/models/absent-objects-word-queries-every-sample.yaml
    (seeds 4 and 5): it helps only if, for both, the mixed ceiling rises by a point or more over the control
    of the same seed with present-object mIoU no more than a point lower on any set. The docs say it
    does not help."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    config = TrainConfig(
        **read_config_file(repository / "src/groundiff/configs/models/absent-objects-word-queries-every-sample.yaml")
    )
    assert config.negative_fraction == 1.0 and config.model["class_queries"] == "words"
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    helps = []
    for seed in (4, 5):
        every = measured[f"subtract-all-hard-negatives-word-queries-every-sample-15-epochs-seed-{seed}"]
        control = measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]["sets"]
        assert _trained_as(every, config) and every["train_seed"] == seed
        rise = (
            every["sets"]["truth-test-mixed"]["absent"]["ceiling"]["n_acc"]
            - control["truth-test-mixed"]["absent"]["ceiling"]["n_acc"]
        )
        kept = all(every["sets"][kind]["miou"] >= control[kind]["miou"] - 1 for kind in control)
        helps.append(rise >= 1 and kept)
    assert all(helps) is False
    # A trade that depends on the seed: seed 5 meets the target everywhere, seed 4 loses mixed masks.
    without = measured["subtract-20-epochs"]["sets"]
    five = measured["subtract-all-hard-negatives-word-queries-every-sample-15-epochs-seed-5"]["sets"]
    assert all(
        r["absent"]["n_acc"] >= 95 and r["absent"]["t_acc"] >= 98 and r["miou"] >= without[k]["miou"] - 1
        for k, r in five.items()
    )
    four = measured["subtract-all-hard-negatives-word-queries-every-sample-15-epochs-seed-4"]["sets"][
        "truth-test-mixed"
    ]
    control = measured["subtract-all-hard-negatives-word-queries-15-epochs-seed-4"]["sets"]["truth-test-mixed"]
    assert (
        four["miou"] < control["miou"] - 3
        and four["absent"]["ceiling"]["n_acc"] < control["absent"]["ceiling"]["n_acc"]
    )


def test_a_third_every_sample_seed_meets_the_target_and_loses_masks():
    """docs/RESULTS.md's seed 6 of the every-sample config: it meets the issue's target on every set, its mixed
    ceiling rises, and present-object mIoU falls more than a point on seen and unseen renders."""
    measured = json.loads((Path(__file__).parents[1] / "docs/results/queries_fresh.json").read_text())["models"]
    every = measured["subtract-all-hard-negatives-word-queries-every-sample-15-epochs-seed-6"]
    control = measured["subtract-all-hard-negatives-word-queries-15-epochs-seed-6"]["sets"]
    assert every["train_seed"] == 6 and every["negative_fraction"] == 1.0
    assert all(_meets_item_one(row, kind, 6, measured) for kind, row in every["sets"].items())
    mixed = every["sets"]["truth-test-mixed"]["absent"]["ceiling"]["n_acc"]
    assert mixed > control["truth-test-mixed"]["absent"]["ceiling"]["n_acc"] + 1
    fell = [kind for kind in control if every["sets"][kind]["miou"] < control[kind]["miou"] - 1]
    assert fell == ["truth-test-seen", "truth-test-unseen"]


def test_mined_negatives_read_as_pre_registered():
    """docs/RESULTS.md's pre-registered readings of configs/models/absent-objects-word-queries-mined.yaml (seeds
    4, 5, 6): "helps" (seeds 4 and 5: mixed ceiling +1 over the control, mIoU no more than a point lower anywhere)
    fails on seed 5's unseen mIoU; item 1 (every seed, every set, own rule) fails on seed 4's mixed N-acc and seed
    6's seen mIoU; the same weights with the score fitted on the truth validation set fail on seeds 5 and 6. What
    holds: every mixed ceiling rises past 98."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    config = TrainConfig(
        **read_config_file(repository / "src/groundiff/configs/models/absent-objects-word-queries-mined.yaml")
    )
    assert config.mine_negatives and config.hard_negatives == 0 and config.model["class_queries"] == "words"
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    helps, meets, truth_val = {}, {}, {}
    for seed in (4, 5, 6):
        mined = measured[f"subtract-mined-negatives-word-queries-15-epochs-seed-{seed}"]
        control = measured[f"subtract-all-hard-negatives-word-queries-15-epochs-seed-{seed}"]["sets"]
        assert _trained_as(mined, config) and mined["train_seed"] == seed
        ceiling = mined["sets"]["truth-test-mixed"]["absent"]["ceiling"]["n_acc"]
        assert ceiling >= 98 and ceiling > control["truth-test-mixed"]["absent"]["ceiling"]["n_acc"] + 1, seed
        kept = all(mined["sets"][kind]["miou"] >= control[kind]["miou"] - 1 for kind in control)
        helps[seed] = kept
        meets[seed] = [kind for kind, row in mined["sets"].items() if not _meets_item_one(row, kind, seed, measured)]
        tuned = measured[f"subtract-mined-negatives-word-queries-15-epochs-seed-{seed}-truth-val-98"]
        assert tuned["answer_rule"]["tuned_on"].endswith("truth-val") and tuned["mine_negatives"]
        truth_val[seed] = all(_meets_item_one(row, kind, seed, measured) for kind, row in tuned["sets"].items())
    assert (helps[4], helps[5]) == (True, False)
    assert meets == {4: ["truth-test-mixed"], 5: [], 6: ["truth-test-seen"]}
    four = measured["subtract-mined-negatives-word-queries-15-epochs-seed-4"]["sets"]["truth-test-mixed"]["absent"]
    assert 94.5 <= four["n_acc"] < 95 and four["t_acc"] > 99
    assert truth_val == {4: True, 5: False, 6: False}


def test_mined_negatives_for_thirty_epochs_meet_item_one_and_won_on_validation():
    """docs/RESULTS.md's fourth pre-registered confirmation (mined negatives continued to 30 epochs, seeds 4, 5,
    6): every seed meets the issue's target on every truth set under its own rule; and on the generated validation
    set, the ground README's recipe was chosen on, each has a higher mIoU and N-acc than every words-alone seed."""
    from groundiff.config import read_config_file

    repository = Path(__file__).parents[1]
    configs = repository / "src/groundiff/configs/models"
    mined = TrainConfig(**read_config_file(configs / "absent-objects-word-queries-mined.yaml"))
    words = TrainConfig(**read_config_file(configs / "absent-objects-words.yaml"))
    measured = json.loads((repository / "docs/results/queries_fresh.json").read_text())["models"]
    controls = [m for m in measured.values() if _trained_as(m, words) and m["answer_rule"]["tuned_on"].endswith("/val")]
    assert len(controls) == 7
    for seed in (4, 5, 6):
        run = measured[f"subtract-mined-negatives-word-queries-30-epochs-seed-{seed}"]
        assert _trained_as(run, dataclasses.replace(mined, epochs=30)) and run["train_seed"] == seed
        assert run["answer_rule"]["tuned_on"].endswith("/val")
        assert all(_meets_item_one(row, kind, seed, measured) for kind, row in run["sets"].items()), seed
        assert run["val_miou"] > max(m["val_miou"] for m in controls), seed
        n_acc = run["answer_rule"]["validation"]["n_acc"]
        assert n_acc > max(m["answer_rule"]["validation"]["n_acc"] for m in controls), seed

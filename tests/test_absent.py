"""Absent objects: negative queries in training, the presence output, "not found" answers, N-acc / T-acc."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import config, generate
from groundiff.cli import main
from groundiff.data.batching import NegativeQueries, collate
from groundiff.data.records import SampleRecord
from groundiff.evaluation.absent import evaluate_absent_queries
from groundiff.evaluation.metrics import proportion_ci95
from groundiff.ground import ground
from groundiff.model import build_grounding_model
from groundiff.model.checkpoint import load_grounding_model, save_checkpoint
from groundiff.sd.pipelines import load_pipeline
from groundiff.training.config import TrainConfig
from groundiff.training.loop import train
from groundiff.training.losses import presence_loss
from test_model import TEXT_WIDTH, TINY_CONFIG, TINY_SHAPES, embeddings, features, tiny_model

POOL = ("cat", "dog", "sofa", "train", "bus")


class FixedEmbedder:
    """Class embeddings by name (a stand-in for the frozen text encoder)."""

    width = TEXT_WIDTH

    def __call__(self, classes):
        return torch.stack([torch.full((TEXT_WIDTH,), float(POOL.index(name))) for name in classes])


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


def test_the_presence_head_answers_per_query_and_leaves_the_masks_alone():
    plain = tiny_model()
    with_head = tiny_model(TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "presence_head": True}))
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

    def __init__(self, present: set[str] | None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.present = present
        self.config = TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "mask_size": 32})

    def answer(self, maps, queries, padding=None):
        from groundiff.model import GroundingOutput

        logits = torch.full((*queries.shape[:2], 32, 32), 10.0)
        if self.present is None:
            return GroundingOutput(logits, None)
        names = [[POOL[int(v)] for v in row[:, 0].tolist()] for row in queries]
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
    assert misses_cat["per_class"]["cat"] == 0.0  # "not found" for a present object scores as an empty mask
    with pytest.raises(ValueError, match="names every class"):
        evaluate_absent_queries(ScriptedModel(None), dataset, FixedEmbedder(), ("cat", "dog"))


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory, sd1_pipe) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("absent")
    for kind, size in {"train": 8, "val": 4, "test-seen": 4}.items():
        generate(config(root / kind, set=kind, num_samples=size, samples_per_shard=8), sd1_pipe)
    return {kind: root / kind for kind in ("train", "val", "test-seen")}


def test_training_with_negatives_records_a_presence_head_that_loads(small_sets, tmp_path):
    tiny = {"level_channels": [4, 4, 8, 8], "width": 32, "heads": 2, "decoder_layers": 1, "ffn_width": 64}
    run = TrainConfig(
        train=str(small_sets["train"]),
        val=str(small_sets["val"]),
        out=str(tmp_path / "run"),
        epochs=1,
        model=tiny,
        negative_fraction=0.5,
        progress=False,
    )
    report = train(run)
    model, meta = load_grounding_model(report.out / "best")
    assert model.presence_head is not None and meta.model_config["presence_head"] is True
    assert meta.train_config["negative_fraction"] == 0.5
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


def test_the_presence_loss_never_reaches_the_mask_layers():
    # Regression: through the shared decoder the presence loss took it over and cost the masks ~10 points.
    model = tiny_model(TINY_CONFIG.__class__(**{**TINY_CONFIG.to_dict(), "presence_head": True})).train()
    output = model.answer(features(TINY_SHAPES, 2), embeddings(2, 3))
    output.presence.sum().backward()
    reached = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert reached and all(name.startswith("presence_head.") for name in reached)

"""Worlds: a registered model brings its labeler, scorer, vocabulary and generation settings; any other
model gets the Stable Diffusion defaults; worlds are found by registration or by entry point."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from groundiff import worlds
from groundiff.data import iter_records
from groundiff.data.vocabulary import ClassSplit, load_split
from groundiff.generation import GenerateConfig, generate_set
from groundiff.labeling.registry import load_labeler
from groundiff.labeling.stub import StubLabeler
from groundiff.scoring import load_scorer
from groundiff.sd.pipelines import load_pipeline
from groundiff.sd.tiny import tiny_pipeline

TOY_SPLIT = ClassSplit("toy", ("red cube", "blue ball", "green cone"), ("pink star",))
TOY = worlds.World(
    name="toy",
    pipeline=lambda device="cpu": tiny_pipeline("sd1"),
    labeler=lambda **options: StubLabeler(TOY_SPLIT.classes, miss_rate=0.0),
    vocabulary=lambda: TOY_SPLIT,
    steps=2,
    guidance_scale=3.0,
    batch_size=2,
)


@pytest.fixture
def toy_world(monkeypatch):
    monkeypatch.setattr(worlds, "_registered", {})
    worlds.register_world(TOY)
    return TOY


def test_a_registered_world_is_the_default_of_every_part(toy_world, tmp_path):
    config = GenerateConfig(out=str(tmp_path / "toy"), model="toy", set="train", num_samples=3, progress=False)
    assert (config.labeler, config.scorer, config.vocabulary) == ("toy", "none", "toy")
    assert (config.steps, config.guidance_scale, config.batch_size) == (2, 3.0, 2)
    assert load_split("toy") is TOY_SPLIT
    assert isinstance(load_labeler("toy"), StubLabeler)
    assert load_scorer("toy") is None  # the toy world has no scorer
    assert load_pipeline("toy", device="cpu").unet.config.sample_size == tiny_pipeline("sd1").unet.config.sample_size

    report = generate_set(config)  # every part loaded by name, through the world
    assert report.complete
    classes = {name for record in iter_records(Path(config.out), features=False) for name in record.classes}
    assert classes <= set(TOY_SPLIT.seen)


def test_flags_override_the_world_and_other_models_get_stable_diffusion_defaults(toy_world, tmp_path):
    config = GenerateConfig(model="toy", steps=5, guidance_scale=1.0, batch_size=1, labeler="maskrcnn")
    assert (config.steps, config.guidance_scale, config.batch_size, config.labeler) == (5, 1.0, 1, "maskrcnn")
    plain = GenerateConfig(model="tiny-sd1")
    assert (plain.labeler, plain.scorer, plain.vocabulary) == ("maskrcnn", "none", "voc-split1")
    assert (plain.steps, plain.guidance_scale, plain.batch_size) == (50, 7.5, 1)


def test_the_mini_world_runs_its_own_settings():
    config = GenerateConfig(model="miniworld")
    assert (config.labeler, config.scorer, config.vocabulary) == ("miniworld", "miniworld", "miniworld")
    assert (config.steps, config.guidance_scale, config.batch_size) == (20, 4.0, 16)


def test_worlds_are_found_by_entry_point_and_checked(monkeypatch):
    monkeypatch.setattr(worlds, "_registered", {})
    points = [EntryPoint("toy", "test_worlds:TOY", worlds.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(worlds, "entry_points", lambda group: points if group == worlds.ENTRY_POINT_GROUP else [])
    assert worlds.get_world("toy") is TOY and "toy" in worlds.world_names()
    assert worlds.get_world("runwayml/stable-diffusion-v1-5") is None

    points[:] = [EntryPoint("ball", "test_worlds:TOY", worlds.ENTRY_POINT_GROUP)]
    with pytest.raises(TypeError, match="'test_worlds:TOY' .declared as world 'ball'. is not a World named 'ball'"):
        worlds.get_world("ball")
    with pytest.raises(ValueError, match="Did you mean 'ball'"):
        worlds.require_world("bal", "truth sets")

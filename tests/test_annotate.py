"""Relabeling and scoring existing sets, and the PyTorch dataset over shards."""

from __future__ import annotations

import json

import pytest

from conftest import BrightnessScorer, config, generate
from groundiff.data import GroundingDataset, read_scores
from groundiff.data.vocabulary import VOC_SPLIT1
from groundiff.generation import label_set, score_set
from groundiff.labeling.stub import StubLabeler


@pytest.fixture(scope="module")
def stored_set(tmp_path_factory, sd1_pipe):
    folder = tmp_path_factory.mktemp("sets") / "mixed"
    generate(config(folder, num_samples=8), sd1_pipe)
    return folder


def test_relabeling_applies_the_discard_rule_without_regenerating(stored_set, tmp_path):
    report = label_set(
        stored_set, tmp_path / "relabeled", StubLabeler(VOC_SPLIT1.classes, 0.5), "stub-0.5", progress=False
    )
    assert report.kept + report.dropped == 8 and report.dropped > 0
    relabeled = GroundingDataset([tmp_path / "relabeled"])
    original = {r.index: r for r in GroundingDataset([stored_set])}
    for record in relabeled:
        assert record.meta["labeler"] == "stub-0.5" and len(record.masks) == 2
        assert (record.image == original[record.index].image).all()
        assert record.features.keys() == original[record.index].features.keys()
    manifest = json.loads((tmp_path / "relabeled" / "manifest.json").read_text())
    assert manifest["samples"] == report.kept and manifest["config"]["relabeled_from"] == str(stored_set)
    again = label_set(
        stored_set, tmp_path / "relabeled", StubLabeler(VOC_SPLIT1.classes, 0.5), "stub-0.5", progress=False
    )
    assert again.already_done == report.kept and again.kept == 0


def test_relabeling_needs_a_complete_source_and_a_new_folder(stored_set, tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete set"):
        label_set(tmp_path, tmp_path / "out", StubLabeler(()), "stub")
    with pytest.raises(ValueError, match="choose an --out folder other than"):
        label_set(stored_set, stored_set, StubLabeler(()), "stub")


def test_scores_go_to_a_side_file_and_select_the_top_fraction(stored_set):
    stored = read_scores(stored_set)
    assert sorted(stored) == list(range(8))
    scores = score_set(stored_set, BrightnessScorer(), progress=False)
    assert scores == pytest.approx(stored)
    best = GroundingDataset([stored_set], features=False, top_quality=0.5)
    assert len(best) == 4
    kept = sorted(scores, key=lambda i: -scores[i])[:4]
    assert sorted(r.index for r in best) == sorted(kept)
    assert best[0].features == {}


def test_dataset_reads_samples_by_position(stored_set):
    dataset = GroundingDataset([stored_set, stored_set])
    assert len(dataset) == 16
    assert dataset[3].index == 3 and dataset[11].index == 3
    assert dataset.images().shape == (16, 32, 32, 3)
    with pytest.raises(FileNotFoundError, match="holds no shards"):
        GroundingDataset([stored_set / "nothing"])

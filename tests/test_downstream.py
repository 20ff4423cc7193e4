"""The downstream test: a segmenter per label source, scored on renders with exact masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from groundiff.apps.downstream import (
    DownstreamConfig,
    LabelledImages,
    _comparisons,
    index_maps,
    score_segmenter,
    train_segmenter,
)
from groundiff.miniworld.renderer import render_scene

CLASSES = ["red ring", "blue cross", "blue disc"]


def _renders(count: int, seed: int) -> LabelledImages:
    scenes = [render_scene([CLASSES[i % 3], CLASSES[(i + 1) % 3]], seed + i) for i in range(count)]
    images = np.stack([scene.image for scene in scenes])
    return LabelledImages(images, index_maps([s.masks for s in scenes], CLASSES, images.shape[1:3]), CLASSES)


class _Oracle(torch.nn.Module):
    """A 'segmenter' that answers the test's own index maps, with its classes in another order."""

    def __init__(self, targets: np.ndarray, classes: list[str]) -> None:
        super().__init__()
        self.targets, self.classes = torch.from_numpy(targets).long(), classes
        self.seen = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        target = self.targets[self.seen : self.seen + len(x)]  # (B, H, W)
        self.seen += len(x)
        own = torch.zeros_like(target)
        for k, name in enumerate(CLASSES):
            if name in self.classes:
                own[target == k + 1] = self.classes.index(name) + 1
        return {"out": torch.nn.functional.one_hot(own, len(self.classes) + 1).permute(0, 3, 1, 2).float()}


def test_scores_follow_the_class_names_not_their_order():
    test = _renders(6, seed=100)
    perfect = score_segmenter(_Oracle(test.targets, CLASSES[::-1]), CLASSES[::-1], test, batch_size=4)
    assert perfect["miou"] == pytest.approx(100) and perfect["foreground_iou"] == pytest.approx(100)
    assert perfect["miou_ci95"] == pytest.approx([100, 100])
    # A segmenter that knows only 'blue disc' scores 0 on the other classes, and the mean shows it.
    partial = score_segmenter(_Oracle(test.targets, ["blue disc"]), ["blue disc"], test)
    assert partial["per_class"] == pytest.approx({"blue cross": 0, "blue disc": 100, "red ring": 0})


def test_index_maps_leave_images_without_masks_as_background():
    maps = index_maps([{}, {"blue disc": np.eye(3, dtype=bool)}], CLASSES, (3, 3))
    assert maps.shape == (2, 3, 3) and maps[0].max() == 0 and (maps[1] == 3 * np.eye(3)).all()


def test_comparisons_state_the_targets():
    rows = {"grounding": {"miou": 45.0}, "labeler": {"miou": 50.0}, "cross_attention": {"miou": 20.0}}
    compared = _comparisons(rows)
    assert compared["ratio_to_labeler"] == pytest.approx(0.9) and compared["target_ratio_met"]
    assert compared["gap_to_cross_attention"] == pytest.approx(25) and compared["target_gap_met"]
    rows["grounding"]["miou"] = 30.0
    assert not _comparisons(rows)["target_ratio_met"] and not _comparisons(rows)["target_gap_met"]
    assert _comparisons({"grounding": {"miou": 1.0}}) == {}


def test_config_names_bad_values():
    with pytest.raises(ValueError, match="Unknown label source 'oracle'"):
        DownstreamConfig(sources=("oracle",))
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        DownstreamConfig(epochs=0)


@pytest.mark.slow
def test_a_segmenter_on_exact_masks_beats_one_on_background_only():
    torch.set_num_threads(1)
    train, test = _renders(48, seed=0), _renders(16, seed=1000)
    config = DownstreamConfig(epochs=8, batch_size=8, learning_rate=3e-3, progress=False)
    exact = score_segmenter(train_segmenter(train, config), CLASSES, test)
    empty = LabelledImages(train.images, np.zeros_like(train.targets), CLASSES)
    background = score_segmenter(train_segmenter(empty, config), CLASSES, test)
    assert background["miou"] == 0 and background["foreground_iou"] == 0
    assert exact["foreground_iou"] > 20 and exact["miou"] > 5


@pytest.mark.slow
def test_the_whole_run_at_a_tiny_size_writes_every_source_and_resumes(tmp_path):
    """The small version of `groundiff downstream`: every set made, every source scored, a rerun reuses them."""
    from groundiff.apps.downstream import run_downstream
    from groundiff.cli import main

    torch.set_num_threads(1)
    flags = ["--out", str(tmp_path), "--train-images", "8", "--test-images", "8", "--val-images", "4"]
    assert main(["downstream", *flags, "--epochs", "1", "--batch-size", "4", "--progress", "false"]) == 0
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "runs").glob("*.json")}
    report = run_downstream(
        DownstreamConfig(
            out=str(tmp_path), train_images=8, test_images=8, val_images=4, epochs=1, batch_size=4, progress=False
        )
    )
    assert set(report["rows"]) == {"grounding", "cross_attention", "labeler", "exact", "seen_only"}
    assert "synthesize" not in report["seconds"]  # nothing was synthesized or trained again
    assert written == {path: path.stat().st_mtime_ns for path in (tmp_path / "runs").glob("*.json")}
    assert len(written) == 5
    kept = report["synthesis"]["kept"]
    assert all(row["train_images"] == kept and row["samples"] == 8 for row in report["rows"].values())
    assert report["rows"]["seen_only"]["miou"] == 0
    assert report["rows"]["cross_attention"]["setting"]["rule"] in ("threshold", "argmax")
    assert (tmp_path / "synthetic" / "dataset" / "voc" / "classes.txt").exists()

"""Training, checkpoints, evaluation and inference end to end on tiny generated sets."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import config, generate
from groundiff.cli import main
from groundiff.data import GroundingDataset
from groundiff.evaluation.evaluate import evaluate_checkpoint, evaluate_dataset
from groundiff.evaluation.reference_scores import attention_scores
from groundiff.ground import objects_from_prompt
from groundiff.model.checkpoint import load_checkpoint_meta, load_grounding_model
from groundiff.training import loop as train_module
from groundiff.training.config import TrainConfig
from groundiff.training.loop import resume, train

TINY_MODEL = {"level_channels": [4, 4, 8, 8], "width": 32, "heads": 2, "decoder_layers": 1, "ffn_width": 64}


@pytest.fixture(scope="module")
def sets(tmp_path_factory, sd1_pipe) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grounding")
    sizes = {"train": 12, "val": 6, "test-seen": 6, "test-unseen": 6}
    for kind, size in sizes.items():
        generate(config(root / kind, set=kind, num_samples=size, samples_per_shard=8), sd1_pipe)
    return {kind: root / kind for kind in sizes}


def run_config(sets: dict[str, Path], out: Path, **overrides) -> TrainConfig:
    values = dict(
        train=str(sets["train"]),
        val=str(sets["val"]),
        out=str(out),
        epochs=3,
        lr=1e-3,
        model=TINY_MODEL,
        progress=False,
    )
    return TrainConfig(**{**values, **overrides})


def test_training_lowers_the_loss_and_beats_an_untrained_model(sets, tmp_path):
    report = train(run_config(sets, tmp_path / "run", epochs=4))
    losses = [row["train_loss"] for row in report.history]
    assert losses[-1] < losses[0]
    untrained = train_module._Trainer(run_config(sets, tmp_path / "untrained"))
    baseline = evaluate_dataset(untrained.model, untrained.val_set, untrained.embedder)["miou"]
    assert report.best_val_miou > baseline
    assert (tmp_path / "run" / "best" / "model.safetensors").exists()
    assert (tmp_path / "run" / "curves.png").exists() and (tmp_path / "run" / "history.csv").exists()
    assert 0 <= report.data_wait_fraction < 1 and report.samples_per_s > 0
    meta = json.loads((tmp_path / "run" / "best" / "checkpoint.json").read_text())
    assert meta["epoch"] == report.best_epoch and meta["val"]["miou"] == pytest.approx(report.best_val_miou)
    # Regression: maps are concatenated in sorted-name order, so a reloaded model predicts the same.
    reloaded, _ = load_grounding_model(tmp_path / "run" / "best")
    again = evaluate_dataset(reloaded, untrained.val_set, untrained.embedder)["miou"]
    assert again == pytest.approx(report.best_val_miou)


def test_training_repeats_exactly_for_a_seed_and_thread_count_which_it_records(sets, tmp_path):
    previous = torch.get_num_threads()
    try:
        first = train(run_config(sets, tmp_path / "a", epochs=1, threads=1))
        second = train(run_config(sets, tmp_path / "b", epochs=1, threads=1))
    finally:
        torch.set_num_threads(previous)
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]
    assert (tmp_path / "a/best/model.safetensors").read_bytes() == (tmp_path / "b/best/model.safetensors").read_bytes()
    meta = json.loads((tmp_path / "a" / "best" / "checkpoint.json").read_text())
    assert meta["threads"] == 1 and meta["train_config"]["threads"] == 1
    with pytest.raises(ValueError, match="threads must be at least 1"):
        run_config(sets, tmp_path / "c", threads=0)


def test_resume_continues_exactly(sets, tmp_path):
    train(run_config(sets, tmp_path / "straight", epochs=2))
    train(run_config(sets, tmp_path / "interrupted", epochs=1))
    resume(run_config(sets, tmp_path / "interrupted", epochs=2))
    straight, _ = load_grounding_model(tmp_path / "straight" / "last")
    resumed, _ = load_grounding_model(tmp_path / "interrupted" / "last")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_an_existing_run_is_never_overwritten(sets, tmp_path):
    train(run_config(sets, tmp_path / "run", epochs=1))
    before = (tmp_path / "run" / "last" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(run_config(sets, tmp_path / "run", epochs=1))
    assert (tmp_path / "run" / "last" / "model.safetensors").read_bytes() == before


def test_a_nan_loss_stops_training_with_the_samples_named(sets, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "grounding_loss", lambda *args: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(FloatingPointError, match="Loss became nan at epoch 1 on samples"):
        train(run_config(sets, tmp_path / "run", epochs=1))


def test_every_ablation_is_a_config_value(sets, tmp_path):
    for name, overrides in {
        "baseline": dict(template="photo_x", end_of_text=True, loss="bce", dropout=0.0),
        "dice": dict(loss="dice"),
        "template": dict(template="photo_x_and_y"),
        "subtract": dict(subtract_others=True),
    }.items():
        report = train(run_config(sets, tmp_path / name, epochs=1, **overrides))
        assert np.isfinite(report.history[0]["train_loss"]), name
    # The switch travels with the checkpoint, so evaluation and `ground` embed classes as training did.
    assert load_checkpoint_meta(tmp_path / "subtract" / "best").subtract_others is True
    assert load_checkpoint_meta(tmp_path / "dice" / "best").subtract_others is False
    with pytest.raises(ValueError, match="Unknown loss 'focal'"):
        run_config(sets, tmp_path, loss="focal")


def test_evaluate_and_ground_commands(sets, tmp_path, capsys):
    arguments = ["--train", str(sets["train"]), "--val", str(sets["val"]), "--out", str(tmp_path / "run")]
    options = ["--epochs", "1", "--progress", "false", "--config", str(write_model_config(tmp_path))]
    assert main(["train", *arguments, *options]) == 0
    checkpoint = tmp_path / "run" / "best"
    out = tmp_path / "eval" / "results.json"
    data = [str(sets["test-seen"]), str(sets["test-unseen"])]
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", *data, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"test-seen", "test-unseen"}
    assert set(results["test-unseen"]) == {
        "miou",
        "miou_ci95",
        "miou_per_image",
        "per_class",
        "classes_covered",
        "samples",
        "target",
        "references",
    }
    assert set(results["test-unseen"]["per_class"]) <= {"tvmonitor", "car", "dog", "sofa", "train"}
    assert out.with_suffix(".md").exists() and (tmp_path / "eval" / "results_examples.png").exists()
    prompt = "a photograph of a dog and a sofa"
    assert main(["ground", prompt, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "grounded")]) == 0
    assert {p.name for p in (tmp_path / "grounded").iterdir()} == {
        "image.png",
        "mask_dog.png",
        "mask_sofa.png",
        "overlay.png",
    }
    capsys.readouterr()


def write_model_config(folder: Path) -> Path:
    path = folder / "train.yaml"
    path.write_text(json.dumps({"model": TINY_MODEL, "lr": 1e-3}))
    return path.rename(path.with_suffix(".json"))


def test_objects_are_parsed_from_the_generation_template():
    assert objects_from_prompt("a photograph of a dog and a sofa") == ["dog", "sofa"]
    assert objects_from_prompt("a photograph of a red ring and a blue disc and a cat") == [
        "red ring",
        "blue disc",
        "cat",
    ]
    with pytest.raises(ValueError, match="does not follow the template"):
        objects_from_prompt("two dogs on a sofa")


def test_two_process_ddp_training_on_gloo(sets, tmp_path):
    config_file = write_model_config(tmp_path)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    sets_and_out = ["--train", str(sets["train"]), "--val", str(sets["val"]), "--out", str(tmp_path / "ddp")]
    options = ["--epochs", "1", "--progress", "false", "--config", str(config_file)]
    command = [*launcher, "-m", "groundiff.cli", "train", *sets_and_out, *options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best val mIoU") == 2  # both ranks finish and agree on the checkpoint
    model, meta = load_grounding_model(tmp_path / "ddp" / "best")
    assert meta.epoch == 1


def test_a_named_experiment_runs_and_appends_its_row(sets, tmp_path, capsys):
    assert main(["experiment", "list"]) == 0
    assert "table4-loss-dice" in capsys.readouterr().out.split()
    arguments = ["--train", str(sets["train"]), "--val", str(sets["val"]), "--test", str(sets["test-unseen"])]
    options = ["--out", str(tmp_path), "--model-config", str(write_model_config(tmp_path))]
    for seed in (0, 1):
        assert main(["experiment", "table2-baseline", *arguments, *options, "--seed", str(seed)]) == 0
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("experiment,seed,train_samples,best_epoch,val_miou,test-unseen mIoU")
    assert [r.split(",")[:2] for r in rows[1:]] == [["table2-baseline", "0"], ["table2-baseline", "1"]]
    assert main(["experiment", "table9"]) == 2
    assert "Unknown experiment 'table9'" in capsys.readouterr().err


def test_evaluation_refuses_mismatched_layouts_and_non_test_sets(sets, sd1_pipe, tmp_path):
    train(run_config(sets, tmp_path / "run", epochs=1))
    other = tmp_path / "two-blocks"
    generate(config(other, set="test-unseen", num_samples=2, feature_blocks=("mid", "up3")), sd1_pipe)
    with pytest.raises(ValueError, match="stores features .* the checkpoint expects"):
        evaluate_checkpoint(tmp_path / "run" / "best", [other], tmp_path / "out.json")
    with pytest.raises(ValueError, match="is a 'train' set; evaluate on test sets"):
        evaluate_checkpoint(tmp_path / "run" / "best", [sets["train"]], tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_sets_of_another_model_are_scored_only_when_asked_cross_model(sets, tmp_path):
    """The paper's cross-model tables test a grounding model on another diffusion model's sets (same text
    encoder); by default that is refused, since features of different U-Nets do not mix unasked."""
    import json
    import shutil

    train(run_config(sets, tmp_path / "run", epochs=1))
    other = tmp_path / "fine-tune-test-seen"
    shutil.copytree(sets["test-seen"], other)
    for name in ("config.json", "manifest.json"):
        document = json.loads((other / name).read_text())
        (document.get("config", document))["model"] = "a-fine-tune"
        (other / name).write_text(json.dumps(document))
    with pytest.raises(ValueError, match="generated by 'a-fine-tune'.*pass --cross-model"):
        evaluate_checkpoint(tmp_path / "run" / "best", [other], tmp_path / "out.json")
    crossed = evaluate_checkpoint(tmp_path / "run" / "best", [other], tmp_path / "out.json", cross_model=True)
    own = evaluate_checkpoint(tmp_path / "run" / "best", [sets["test-seen"]], tmp_path / "own.json")
    assert crossed.results["test-seen"]["miou"] == own.results["test-seen"]["miou"]  # same maps, same score


def predict_everything_by_hand(folder) -> float:
    """Category-wise mIoU (percent) of all-True masks: per class, target pixels over all pixels of its images."""
    covered, pixels = {}, {}
    for record in GroundingDataset([folder], features=False):
        for name, mask in zip(record.classes, record.masks, strict=True):
            covered[name] = covered.get(name, 0) + int(mask.sum())
            pixels[name] = pixels.get(name, 0) + mask.size
    return 100 * sum(covered[c] / pixels[c] for c in covered) / len(covered)


def test_references_are_scored_beside_the_model(sets, sd1_pipe, tmp_path):
    train(run_config(sets, tmp_path / "run", epochs=1))
    with_maps, val = tmp_path / "test-unseen", tmp_path / "val"
    generate(config(with_maps, set="test-unseen", num_samples=3, attention_maps=True), sd1_pipe)
    generate(config(val, set="val", num_samples=3, attention_maps=True), sd1_pipe)
    record = next(iter(GroundingDataset([with_maps])))
    assert record.attention.shape == (2, 16, 16) and record.attention.dtype == torch.float16
    best = tmp_path / "run" / "best"
    report = evaluate_checkpoint(best, [with_maps], tmp_path / "out.json", attention_baseline=True, val=[val])
    result = report.results["test-unseen"]
    references = result["references"]
    assert set(references) == {"predict_everything", "oracle", "cross_attention", "cross_attention_argmax"}
    assert references["predict_everything"]["miou"] == pytest.approx(predict_everything_by_hand(with_maps))
    assert references["oracle"]["miou"] > references["predict_everything"]["miou"]
    assert references["cross_attention"]["tuned_on"] == str(val)
    assert result["target"] == "labeler" and result["classes_covered"] == len(result["per_class"])
    low, high = result["miou_ci95"]
    assert low <= result["miou"] <= high
    markdown = report.markdown_path.read_text()
    assert "predict every pixel (floor)" in markdown and "cross-attention, DAAM threshold" in markdown
    untuned = evaluate_checkpoint(best, [with_maps], tmp_path / "untuned.json", attention_baseline=True)
    assert untuned.results["test-unseen"]["references"]["cross_attention"]["threshold"] == 0.4
    with pytest.raises(ValueError, match="--val takes validation sets"):
        evaluate_checkpoint(best, [with_maps], tmp_path / "x.json", attention_baseline=True, val=[with_maps])
    with pytest.raises(ValueError, match="no cross-attention maps"):
        attention_scores(next(iter(GroundingDataset([sets["test-unseen"]], features=False))))


def test_a_layout_with_fewer_levels_trains_with_default_sizes(sd1_pipe, tmp_path):
    # Regression: the mini world's U-Net has 3 resolution levels; the default model assumed SD's 4.
    folders = {}
    for kind, size in (("train", 6), ("val", 4)):
        folders[kind] = tmp_path / kind
        generate(config(folders[kind], set=kind, num_samples=size, feature_blocks=("up1", "up2", "up3")), sd1_pipe)
    small = {"width": 32, "heads": 2, "decoder_layers": 1, "ffn_width": 64}
    report = train(run_config(folders, tmp_path / "run", epochs=1, model=small))
    _, meta = load_grounding_model(tmp_path / "run" / "best")
    assert meta.model_config["level_channels"] == [64, 128] and report.history


def test_history_keeps_a_column_that_only_later_epochs_log(tmp_path):
    # A run resumed with newer code may log one more column (word_loss) than its first epochs did.
    first = {"train_loss": 0.5, "epoch": 1, "val_miou": 40.0, "val_miou_per_image": 41.0}
    later = {**first, "epoch": 2, "word_loss": 0.25}
    train_module.write_history(tmp_path, [first, later])
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert rows[0]["word_loss"] == "" and rows[1]["word_loss"] == "0.25"

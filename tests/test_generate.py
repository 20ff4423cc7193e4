"""`generate_set` and `groundiff generate`: storage, discard rule, determinism, resume, workers, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import config, generate
from groundiff.capture.replay import stored_maps
from groundiff.data import ShardError, iter_records


def by_index(folder: Path) -> dict[int, object]:
    return {r.index: r for r in iter_records(folder)}


def test_a_set_stores_images_features_masks_and_metadata(sd1_pipe, tmp_path):
    report = generate(config(tmp_path / "set"), sd1_pipe)
    assert report.complete and report.generated == 6 and report.discarded > 0
    records = by_index(tmp_path / "set")
    assert sorted(records) == list(range(6))
    record = records[0]
    assert record.image.shape == (32, 32, 3) and record.image.dtype == np.uint8
    assert len(record.masks) == 2 and record.masks[0].shape == (32, 32) and record.masks[0].dtype == bool
    assert (
        record.features["step1.up3"].shape == (8, 16, 16) and str(record.features["step1.up3"].dtype) == "torch.float16"
    )
    assert record.meta["prompt"] == f"a photograph of a {record.classes[0]} and a {record.classes[1]}"
    assert 0 <= record.meta["iqa"] <= 1 and record.meta["feature_timesteps"] == {"1": 1}
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["samples"] == 6 and manifest["discarded"] == report.discarded
    assert manifest["bytes_per_sample"] > manifest["bytes_per_sample_by_part"]["features"] > 0
    assert manifest["config"]["num_samples"] == 6 and "torch" in manifest["versions"]
    missed = sum(c["missed"] for c in manifest["per_class"].values())
    assert missed >= report.discarded  # every discarded attempt missed at least one class
    with tarfile.open(sorted((tmp_path / "set").glob("*.tar"))[0]) as tar:
        names = tar.getnames()
    assert names[:5] == ["00000000.png", "00000000.json", "00000000.features.safetensors"] + [
        "00000000.mask0.png",
        "00000000.mask1.png",
    ]


def test_discarded_attempts_are_retried_with_the_next_attempt_seed(sd1_pipe, tmp_path):
    generate(config(tmp_path / "set", num_samples=8), sd1_pipe)
    assert len(list(iter_records(tmp_path / "set"))) == 8  # regression: a kept retry was once queued again
    records = by_index(tmp_path / "set").values()
    retried = [r for r in records if r.meta["attempt"] > 0]
    assert retried, "the stub labeler misses 30% of classes: some sample must have been retried"
    for record in retried:
        failures = record.meta["discarded_attempts"]
        assert [f["attempt"] for f in failures] == list(range(record.meta["attempt"]))
        assert all(f["missing"] for f in failures)


def test_samples_do_not_depend_on_worker_count_or_order(sd1_pipe, tmp_path):
    generate(config(tmp_path / "one"), sd1_pipe)
    for worker in (1, 0):
        report = generate(config(tmp_path / "two"), sd1_pipe, worker=worker, workers=2)
    assert report.complete
    one, two = by_index(tmp_path / "one"), by_index(tmp_path / "two")
    assert len(list((tmp_path / "two").glob("*.tar"))) == 2
    for index in range(6):
        assert one[index].meta == two[index].meta
        assert np.array_equal(one[index].image, two[index].image)
        assert all(np.array_equal(a, b) for a, b in zip(one[index].masks, two[index].masks, strict=True))


def test_a_finished_set_is_left_alone_and_a_changed_config_refused(sd1_pipe, tmp_path):
    cfg = config(tmp_path / "set")
    generate(cfg, sd1_pipe)
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "set").glob("*.tar")}
    again = generate(cfg, sd1_pipe)
    assert again.generated == 0 and "already complete" in again.messages[0]
    with pytest.raises(ValueError, match="different config \\(seed: set has 0, now 1\\)"):
        generate(config(tmp_path / "set", seed=1), sd1_pipe)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "set").glob("*.tar")} == shards


def test_three_objects_and_a_class_override(sd1_pipe, tmp_path):
    cfg = config(tmp_path / "set", set="train", objects_per_prompt=3, classes=("cat", "cow", "bus", "sheep"))
    generate(cfg, sd1_pipe)
    for record in by_index(tmp_path / "set").values():
        assert len(set(record.classes)) == 3 and set(record.classes) <= {"cat", "cow", "bus", "sheep"}
        assert record.meta["prompt"].count(" and a ") == 2 and len(record.masks) == 3


def test_a_mix_of_object_counts_draws_each_count_and_keeps_the_pair_sets_unchanged(sd1_pipe, tmp_path):
    from groundiff.generation.sampling import draw_count

    assert [draw_count(2, None, seed) for seed in range(5)] == [2] * 5
    counts = [draw_count(1, 4, seed) for seed in range(400)]
    assert set(counts) == {1, 2, 3, 4} and all(60 < counts.count(n) < 140 for n in (1, 2, 3, 4))
    cfg = config(tmp_path / "mix", set="train", num_samples=8, objects_per_prompt=1, max_objects_per_prompt=3)
    generate(cfg, sd1_pipe)
    records = by_index(tmp_path / "mix").values()
    assert {len(r.classes) for r in records} <= {1, 2, 3} and len({len(r.classes) for r in records}) > 1
    assert all(len(r.masks) == len(r.classes) == r.meta["prompt"].count(" a ") for r in records)
    assert "max_objects_per_prompt" not in config(tmp_path / "pairs").content()  # older sets still match
    with pytest.raises(ValueError, match="below objects_per_prompt"):
        config(tmp_path / "bad", objects_per_prompt=3, max_objects_per_prompt=2)


def test_a_truncated_shard_is_named_with_the_fix(sd1_pipe, tmp_path):
    generate(config(tmp_path / "set"), sd1_pipe)
    shard = sorted((tmp_path / "set").glob("*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(ShardError, match=f"Shard '.*{shard.name}' is unreadable or truncated.*Delete it"):
        list(iter_records(tmp_path / "set"))


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"classes": ("dgo", "cat")}, ValueError, "Unknown class 'dgo'.*Did you mean 'dog'"),
        ({"set": "train", "objects_per_prompt": 16}, ValueError, "only 15"),
        ({"model": "./missing-model"}, FileNotFoundError, "Model path './missing-model' does not exist"),
        ({"feature_blocks": ("up9",)}, ValueError, "Feature block 'up9' is not part of this U-Net"),
    ],
)
def test_bad_input_is_explained_and_leaves_data_intact(sd1_pipe, tmp_path, overrides, error, message):
    pipe = None if "model" in overrides else sd1_pipe
    with pytest.raises(error, match=message):
        generate(config(tmp_path / "set", **overrides), pipe)
    assert not list((tmp_path / "set").glob("*.tar*")) if (tmp_path / "set").exists() else True


def test_bad_config_values_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="Unknown set 'tests'"):
        config(tmp_path, set="tests")
    with pytest.raises(ValueError, match="num_samples must be at least 1"):
        config(tmp_path, num_samples=0)
    with pytest.raises(ValueError, match="Unknown dtype 'half'"):
        config(tmp_path, feature_dtype="half")


CLI = [
    sys.executable,
    "-m",
    "groundiff.cli",
    "generate",
    "--model",
    "tiny-sd1",
    "--labeler",
    "none",
    "--scorer",
    "none",
]


def cli_args(folder: Path, samples: int) -> list[str]:
    return CLI + ["--set", "val", "--num-samples", str(samples), "--steps", "2", "--samples-per-shard", "2",
                  "--progress", "false", "--out", str(folder)]  # fmt: skip


def subprocess_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def test_two_processes_share_a_set_by_rank(tmp_path):
    processes = [
        subprocess.Popen(cli_args(tmp_path / "set", 6), env=subprocess_env(RANK=str(rank), WORLD_SIZE="2"))
        for rank in (0, 1)
    ]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    assert sorted(by_index(tmp_path / "set")) == list(range(6))
    assert {p.name.split("-")[1] for p in (tmp_path / "set").glob("*.tar")} == {"w000of002", "w001of002"}
    assert (tmp_path / "set" / "manifest.json").exists()


def test_resume_after_sigkill_gives_exactly_the_requested_samples(tmp_path):
    folder = tmp_path / "set"
    process = subprocess.Popen(cli_args(folder, 40), env=subprocess_env(), stdout=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list(folder.glob("*.tar"))) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = len(by_index(folder))
    assert 4 <= interrupted < 40, "the kill must land mid-set"
    result = subprocess.run(cli_args(folder, 40), env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"found {interrupted} already on disk" in result.stdout
    records = by_index(folder)
    assert sorted(records) == list(range(40)) and not list(folder.glob("*.tmp"))
    reference = tmp_path / "reference"
    subprocess.run(cli_args(reference, 40), env=subprocess_env(), check=True, capture_output=True, timeout=600)
    for index, record in by_index(reference).items():
        assert np.array_equal(record.image, records[index].image) and record.meta == records[index].meta


def test_unet_input_storage_is_small_and_recomputes_the_maps(sd1_pipe, tmp_path):
    generate(config(tmp_path / "both", feature_storage="both", num_samples=2), sd1_pipe)
    generate(config(tmp_path / "inputs", feature_storage="unet-input", num_samples=2), sd1_pipe)
    both, inputs = by_index(tmp_path / "both"), by_index(tmp_path / "inputs")
    for index, record in inputs.items():
        assert not any(".input." not in k for k in record.features)
        timesteps = {int(k): v for k, v in record.meta["feature_timesteps"].items()}
        maps = stored_maps(record.features, timesteps, sd1_pipe.unet)
        stored = {k: v for k, v in both[index].features.items() if ".input." not in k}
        assert maps.keys() == stored.keys()
        for name, tensor in maps.items():
            torch.testing.assert_close(tensor.half(), stored[name], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="Unknown feature_storage 'latents'"):
        config(tmp_path, feature_storage="latents")

"""Fault injection and careless input (issue 17): a full disk, two runs on one folder, kills, changed
resumes, corrupt files and names that look like paths. Each fault ends in one line that names the bad
input and the fix, and nothing published is ever partial."""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision

from conftest import config, generate
from groundiff.cli import main
from groundiff.data import ShardError, iter_records
from groundiff.data.manifest import MANIFEST_FILE
from groundiff.data.shards import ShardWriter, index_shard
from groundiff.evaluation.evaluate import evaluate_checkpoint
from groundiff.files import FolderBusyError, hold_lock
from groundiff.generation.generate import worker_from_environment
from groundiff.ground import GroundingResult, write_grounding
from groundiff.labeling import maskrcnn
from groundiff.model.checkpoint import CheckpointError, load_grounding_model, load_weights
from groundiff.training import loop as train_module
from groundiff.training.config import TrainConfig
from groundiff.training.loop import resume, train
from test_shards import record

TINY_MODEL = {"level_channels": [4, 4, 8, 8], "width": 32, "heads": 2, "decoder_layers": 1, "ffn_width": 64}
PROMPT = "a photograph of a dog and a sofa"


@pytest.fixture(scope="module")
def sets(tmp_path_factory, sd1_pipe) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    for kind, size in {"train": 4, "val": 3, "test-seen": 2}.items():
        generate(config(root / kind, set=kind, num_samples=size), sd1_pipe)
    return {kind: root / kind for kind in ("train", "val", "test-seen")}


def run_config(sets: dict[str, Path], out: Path, **overrides: Any) -> TrainConfig:
    values = dict(train=str(sets["train"]), val=str(sets["val"]), out=str(out), epochs=2, lr=1e-3, model=TINY_MODEL)
    return TrainConfig(**{**values, "progress": False, **overrides})


@pytest.fixture(scope="module")
def run(sets, tmp_path_factory) -> Path:
    """A finished two-epoch run; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(run_config(sets, out))
    return out


def copy(folder: Path, into: Path) -> Path:
    return Path(shutil.copytree(folder, into / folder.name, symlinks=True))


def one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """The command's stderr, checked to be one line without a traceback that holds every fragment."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def readable(folder: Path) -> list[int]:
    """Indices of every sample in the folder's published shards; fails on any partial shard."""
    return sorted(location.index for shard in sorted(folder.glob("*.tar")) for location in index_shard(shard))


# 1. A full disk ---------------------------------------------------------------------------------------


class FullDisk:
    """`open` for tarfile: the first `whole_files` files it opens get every byte, the next `budget` more
    bytes, then each write fails with ENOSPC, as on a full disk."""

    def __init__(self, budget: int, whole_files: int = 0) -> None:
        self.budget, self.whole_files = budget, whole_files

    def __call__(self, name: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = builtins.open(name, mode, *args, **kwargs)  # noqa: SIM115 (tarfile closes it)
        if "w" not in mode:
            return handle
        if self.whole_files:
            self.whole_files -= 1
            return handle
        return _LimitedFile(handle, self)


class _LimitedFile:
    def __init__(self, handle: Any, disk: FullDisk) -> None:
        self.handle, self.disk = handle, disk

    def write(self, data: bytes) -> int:
        if len(data) > self.disk.budget:
            self.handle.write(data[: self.disk.budget])
            self.disk.budget = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.disk.budget -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def shard_layout(tmp_path: Path) -> tuple[int, int]:
    """(bytes of the members of a two-sample shard, bytes of the whole shard with end blocks and padding)."""
    writer = ShardWriter(tmp_path, "probe", 2)
    writer.write(record(0))
    writer.write(record(1))
    shard = writer.published[0]
    end = max(offset + size for loc in index_shard(shard) for offset, size in loc.files.values())
    size = shard.stat().st_size
    shard.unlink()
    members = -(-end // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    assert members + 2 * tarfile.BLOCKSIZE < size - 10, "the shard must end in padding"
    return members, size


@pytest.mark.parametrize("where", ["first sample", "second sample", "end blocks", "padding"])
def test_a_full_disk_never_publishes_a_partial_shard(tmp_path, monkeypatch, where):
    # Regression: `abandon` closed the tar (writing end blocks to the full disk), failed before deleting
    # it, and `__exit__` then published the truncated shard under its final name.
    members, size = shard_layout(tmp_path)
    budget = {"first sample": 700, "second sample": members - 700, "end blocks": members + 10, "padding": size - 10}
    monkeypatch.setattr(tarfile, "bltn_open", FullDisk(budget[where]))
    with pytest.raises(OSError, match="No space left"), ShardWriter(tmp_path, "train", 2) as writer:
        writer.write(record(0))
        writer.write(record(1))
    assert not list(tmp_path.iterdir()), "no shard, complete or partial, and no temporary file"


def test_a_full_disk_during_generate_is_one_line_and_the_rerun_completes(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "set"
    arguments = ["generate", "--model", "tiny-sd1", "--labeler", "none", "--scorer", "none", "--set", "val"]
    arguments += ["--num-samples", "5", "--steps", "2", "--samples-per-shard", "1", "--progress", "false"]
    arguments += ["--out", str(folder)]
    monkeypatch.setattr(tarfile, "bltn_open", FullDisk(3000, whole_files=2))  # full during the third shard
    assert main(arguments) == 2
    one_line_error(capsys, "No space left for set", str(folder), "Free space", "rerun continues")
    assert readable(folder) == [0, 1] and not list(folder.glob("*.tmp*")) and not (folder / MANIFEST_FILE).exists()
    monkeypatch.undo()
    assert main(arguments) == 0
    assert "found 2 already on disk" in capsys.readouterr().out
    assert readable(folder) == [0, 1, 2, 3, 4] and (folder / MANIFEST_FILE).exists()


# 2. Two runs on one folder ------------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from groundiff.files import hold_lock
with hold_lock(Path(sys.argv[1]), "a test"):
    print("locked", flush=True)
    time.sleep(300)
"""


def test_a_second_run_on_a_folder_is_refused_until_the_first_dies(sd1_pipe, tmp_path, capsys):
    # Regression: both runs used one temporary name; the second deleted the first's open shard as stale.
    folder = tmp_path / "set"
    folder.mkdir()
    open_shard = folder / "test-mixed-w000of001-00000.tar.tmp"  # the live run's shard in progress
    open_shard.write_bytes(b"being written")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder / "test-mixed-w000of001.lock")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        flags = ["--set", "test-mixed", "--model", "tiny-sd1", "--labeler", "stub", "--scorer", "brightness"]
        flags += ["--num-samples", "6", "--steps", "2", "--samples-per-shard", "4", "--progress", "false"]
        assert main(["generate", *flags, "--out", str(folder)]) == 2
        one_line_error(capsys, f"Another process (pid {holder.pid})", "wait for it to finish")
        assert open_shard.read_bytes() == b"being written" and not list(folder.glob("*.tar"))
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops a dead process's lock: nothing stale to delete
        holder.wait()
    report = generate(config(folder), sd1_pipe)
    assert report.complete and readable(folder) == list(range(6)) and not open_shard.exists()


def test_a_run_with_another_worker_count_is_refused(sd1_pipe, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    with hold_lock(folder / "test-mixed-w001of002.lock", "a test"), pytest.raises(FolderBusyError, match="--workers"):
        generate(config(folder), sd1_pipe)
    assert not list(folder.glob("*.tar"))


def test_a_second_training_run_on_a_folder_is_refused(sets, tmp_path):
    (tmp_path / "run").mkdir()
    with hold_lock(tmp_path / "run" / "train.lock", "a test"), pytest.raises(FolderBusyError, match="Another"):
        train(run_config(sets, tmp_path / "run"))
    assert not (tmp_path / "run" / "last").exists()


# 3. A resume with changed settings ------------------------------------------------------------------------


def test_resume_refuses_changed_settings_by_name(sets, run, tmp_path):
    # Regression: `--lr 0.5 --loss bce --seed 5` resumed with lr 1e-4 kept and the new values recorded.
    out = copy(run, tmp_path)
    before = (out / "last" / "model.safetensors").read_bytes()
    changed = "loss: run has 'bce\\+logcosh-dice', now 'bce'; lr: run has 0.001, now 0.5; seed: run has 0, now 5"
    with pytest.raises(ValueError, match=changed):
        resume(run_config(sets, out, lr=0.5, loss="bce", seed=5))
    with pytest.raises(ValueError, match="threads: run has None, now 1"):
        resume(run_config(sets, out, threads=1))  # weights repeat only for one thread count
    with pytest.raises(ValueError, match="has trained 2 epochs, more than --epochs 1"):
        resume(run_config(sets, out, epochs=1))
    assert (out / "last" / "model.safetensors").read_bytes() == before
    report = resume(run_config(sets, out, epochs=3, num_workers=1, progress=True, device="cpu"))
    assert len(report.history) == 3
    meta = json.loads((out / "last" / "checkpoint.json").read_text())
    assert meta["epoch"] == 3 and meta["train_config"]["lr"] == 1e-3 and meta["train_config"]["epochs"] == 3


# 4. The fix an error suggests works ---------------------------------------------------------------------


def test_a_deleted_or_truncated_shard_is_regenerated_as_the_error_says(sd1_pipe, tmp_path):
    # Regression: after deleting a corrupt shard, generate trusted manifest.json: "already complete".
    folder = tmp_path / "set"
    generate(config(folder, samples_per_shard=2), sd1_pipe)
    original = {r.index: r for r in iter_records(folder)}
    shards = sorted(folder.glob("*.tar"))
    shards[1].unlink()
    report = generate(config(folder, samples_per_shard=2), sd1_pipe)
    assert report.complete and report.generated == 2 and report.already_done == 4
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert [s["name"] for s in manifest["shards"]] == [s.name for s in sorted(folder.glob("*.tar"))]
    assert manifest["samples"] == 6 and len(manifest["shards"]) == 3
    for index, again in {r.index: r for r in iter_records(folder)}.items():
        assert np.array_equal(again.image, original[index].image) and again.meta == original[index].meta
    shards[2].write_bytes(shards[2].read_bytes()[:3000])
    with pytest.raises(ShardError, match=f"shard {shards[2].name} has 3000 bytes.*Delete it and run"):
        train_module.check_training_set(str(folder), "test-mixed")
    with pytest.raises(ShardError, match="unreadable or truncated.*Delete it and run `groundiff generate` again"):
        generate(config(folder, samples_per_shard=2), sd1_pipe)
    shards[2].unlink()
    assert generate(config(folder, samples_per_shard=2), sd1_pipe).generated == 2


# 5. One line instead of a traceback ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("set: val\nsteps: a: b\n", ["is not valid YAML at line 2: mapping values are not allowed", "fix it"]),
        ("num_samples: 2.7\n", ["num_samples must be an integer, got 2.7"]),
        ('num_samples: 1\nsteps: "5"\n', ["steps must be an integer, got '5'; write it without quotes"]),
        ("num_samples: two\n", ["num_samples must be an integer, got 'two'"]),
        ("num_samples: 1\nfeature_steps: 1,x\n", ["feature_steps is a comma-separated list, and 'x' is not"]),
        ("num_samples: 1\nprogress: maybe\n", ["progress must be true or false, got 'maybe'"]),
    ],
)
def test_bad_config_files_are_one_line_naming_the_field(tmp_path, capsys, text, fragments):
    path = tmp_path / "set.yaml"
    path.write_text(text)
    tiny = ["--model", "tiny-sd1", "--labeler", "none", "--scorer", "none"]
    assert main(["generate", "--config", str(path), *tiny, "--out", str(tmp_path / "set")]) == 2
    one_line_error(capsys, str(path), *fragments)
    assert not (tmp_path / "set").exists()


def test_config_files_take_lists_and_comma_separated_text_like_the_flags(tmp_path):
    from groundiff.config import typed_values
    from groundiff.generation.config import GenerateConfig

    values = typed_values(GenerateConfig, {"classes": "cat, dog", "feature_steps": [0, -1], "guidance_scale": 4}, "x")
    assert values == {"classes": ("cat", "dog"), "feature_steps": (0, -1), "guidance_scale": 4.0}
    with pytest.raises(ValueError, match="GenerateConfig: num_samples must be an integer, got 2.7"):
        config(tmp_path, num_samples=2.7)


def damage(checkpoint: Path, how: str) -> None:
    weights, meta_path = checkpoint / "model.safetensors", checkpoint / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    if how == "truncated weights, no checksum":
        del meta["sha256"]
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "one flipped bit":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 1
        weights.write_bytes(bytes(data))
    elif how == "missing key":
        del meta["feature_shapes"]
    meta_path.write_text("{not json" if how == "not json" else json.dumps(meta))


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("truncated weights, no checksum", "is unreadable (SafetensorError"),
        ("truncated weights", "does not match the checksum"),
        ("one flipped bit", "does not match the checksum"),  # regression: it loaded silently
        ("missing key", "lacks feature_shapes"),
        ("not json", "is not valid JSON"),
    ],
)
def test_a_damaged_checkpoint_is_one_line(run, tmp_path, capsys, how, fragment):
    checkpoint = copy(run / "best", tmp_path)
    damage(checkpoint, how)
    out = tmp_path / "grounded"
    assert main(["ground", PROMPT, "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    one_line_error(capsys, str(checkpoint), fragment, "train again")
    assert not out.exists()


def test_a_corrupt_features_member_is_one_line(sets, tmp_path, capsys):
    train_set = copy(sets["train"], tmp_path)
    location = min((loc for shard in train_set.glob("*.tar") for loc in index_shard(shard)), key=lambda x: x.index)
    offset, _ = location.files["features.safetensors"]
    with open(location.shard, "r+b") as handle:  # a header length far past the member: same shard size
        handle.seek(offset)
        handle.write((1 << 40).to_bytes(8, "little"))
    arguments = ["train", "--train", str(train_set), "--val", str(sets["val"]), "--out", str(tmp_path / "run")]
    assert main([*arguments, "--progress", "false"]) == 2
    one_line_error(capsys, f"Sample 00000000 of shard '{location.shard}' is corrupt (SafetensorError", "Delete it")


CLI = [sys.executable, "-m", "groundiff.cli", "generate", "--model", "tiny-sd1", "--labeler", "none"]
CLI += ["--scorer", "none", "--set", "val", "--steps", "2", "--samples-per-shard", "2", "--progress", "false"]


def test_sigint_during_generation_is_one_line_and_keeps_the_finished_shards(tmp_path):
    folder = tmp_path / "set"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [*CLI, "--num-samples", "200", "--out", str(folder)]
    # SIGINT as a terminal delivers it: a test run started in the background (`cmd &`) ignores SIGINT, and
    # its children inherit that; the command then finished all 200 samples and the test failed.
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 540  # a shard takes seconds; minutes only on a machine busy with other work
    while not list(folder.glob("*.tar")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    published = len(list(folder.glob("*.tar")))
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "groundiff generate: stopped by SIGINT; every finished shard is kept; run the same command again to "
        "generate the rest."
    )
    assert published >= 1, "the signal must land mid-set"
    assert 2 * published <= len(readable(folder)) < 200 and not list(folder.glob("*.tmp"))


def test_sigterm_is_one_line_and_the_handler_is_restored(tmp_path, monkeypatch, capsys):
    # Regression: SIGTERM exited with status 143 and said nothing at all.
    def terminated(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr("groundiff.generation.generate.generate_set", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["generate", "--out", str(tmp_path / "set"), "--model", "tiny-sd1"]) == 143
    one_line_error(capsys, "groundiff generate: stopped by SIGTERM; every finished shard is kept")
    assert signal.getsignal(signal.SIGTERM) is before


def test_resume_after_a_kill_in_the_first_epoch_starts_over(sets, tmp_path, capsys):
    # Regression: `--resume` after SIGKILL in epoch 1 failed with "No such file .../last/model.safetensors".
    out = tmp_path / "run"
    (out / "last.tmp4242").mkdir(parents=True)  # what a kill during the first save leaves
    (out / "last.tmp4242" / "model.safetensors").write_bytes(b"half")
    arguments = ["train", "--train", str(sets["train"]), "--val", str(sets["val"]), "--epochs", "1"]
    arguments += ["--progress", "false", "--config", str(model_config(tmp_path))]
    assert main([*arguments, "--out", str(out), "--resume"]) == 0
    assert load_grounding_model(out / "last")[1].epoch == 1 and not (out / "last.tmp4242").exists()
    capsys.readouterr()
    assert main([*arguments, "--out", str(tmp_path / "typo"), "--resume"]) == 2
    one_line_error(capsys, "holds no run to resume; check --out, or drop --resume")


def model_config(folder: Path) -> Path:
    path = folder / "model.json"
    path.write_text(json.dumps({"model": TINY_MODEL, "lr": 1e-3}))
    return path


def test_a_save_killed_between_its_renames_is_completed_on_resume(sets, run, tmp_path):
    out = copy(run, tmp_path)
    os.replace(out / "last", out / "last.old777")  # the kill came after the first rename of `save_checkpoint`
    shutil.copytree(out / "last.old777", out / "last.tmp777")
    (out / "last.tmp777" / "new").touch()
    resume(run_config(sets, out, epochs=2))
    assert (out / "last" / "new").exists() and not list(out.glob("last.*"))


# 6. Silent surprises --------------------------------------------------------------------------------------


def test_training_refuses_an_incomplete_set_and_a_train_set_as_val(sets, sd1_pipe, tmp_path):
    partial = tmp_path / "partial"
    generate(config(partial, set="train", num_samples=6), sd1_pipe, worker=0, workers=6)  # 1 of 6 samples
    with pytest.raises(ShardError, match="is incomplete \\(no manifest.json; shards on disk: 1\\)"):
        train(run_config({**sets, "train": partial}, tmp_path / "a"))
    with pytest.raises(ValueError, match="--val '.*train' is a 'train' set; pass a 'val' set"):
        train(run_config({**sets, "val": sets["train"]}, tmp_path / "b"))
    with pytest.raises(ValueError, match="--train '.*val' is a 'val' set; pass a 'train' set"):
        train(run_config({**sets, "train": sets["val"]}, tmp_path / "c"))
    assert not (tmp_path / "a" / "last").exists() and not (tmp_path / "b" / "last").exists()


def test_evaluate_refuses_two_sets_of_one_kind(sets, run, tmp_path):
    second = copy(sets["test-seen"], tmp_path)
    with pytest.raises(ValueError, match="Two 'test-seen' sets given"):
        evaluate_checkpoint(run / "best", [sets["test-seen"], second], tmp_path / "results.json")
    assert not (tmp_path / "results.json").exists()


def test_a_checkpoint_records_and_verifies_the_checksum_of_its_weights(run, tmp_path):
    meta = json.loads((run / "last" / "checkpoint.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors", "training.safetensors"}
    checkpoint = copy(run / "best", tmp_path)
    load_weights(checkpoint)
    damage(checkpoint, "one flipped bit")
    with pytest.raises(CheckpointError, match="model.safetensors' does not match the checksum"):
        load_grounding_model(checkpoint)


def test_a_feature_layout_mismatch_is_found_before_the_first_epoch(sets, sd1_pipe, tmp_path, monkeypatch):
    val = tmp_path / "val"
    generate(config(val, set="val", num_samples=2, feature_blocks=("mid", "up3")), sd1_pipe)
    monkeypatch.setattr(train_module._Trainer, "train_epoch", lambda *a: pytest.fail("an epoch ran"))
    with pytest.raises(ValueError, match="stores other features than train set .* same feature_blocks"):
        train(run_config({**sets, "val": val}, tmp_path / "run"))


def test_zero_workers_is_refused_not_taken_as_one(tmp_path, capsys):
    assert worker_from_environment(None, 0) == (0, 0)
    tiny = ["--model", "tiny-sd1", "--labeler", "none", "--scorer", "none", "--num-samples", "1", "--steps", "2"]
    assert main(["generate", *tiny, "--out", str(tmp_path / "set"), "--workers", "0"]) == 2
    one_line_error(capsys, "Worker 0 of 0 does not exist; use workers >= 1")


def test_an_out_that_is_a_file_is_one_line(sets, run, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("mine")
    train_flags = ["--train", str(sets["train"]), "--val", str(sets["val"])]
    for command in (
        ["generate", "--model", "tiny-sd1", "--out", str(file)],
        ["train", *train_flags, "--out", str(file)],
        ["ground", PROMPT, "--checkpoint", str(run / "best"), "--out", str(file)],
    ):
        assert main(command) == 2
        one_line_error(capsys, f"--out {str(file)!r} is a file, not a folder")
    assert file.read_text() == "mine"


def test_a_model_typo_does_not_block_the_corrected_run(sd1_pipe, tmp_path):
    # Regression: config.json was written before the model loaded, so the corrected run met "a different config".
    with pytest.raises(FileNotFoundError, match="Model path './missing-model' does not exist"):
        generate(config(tmp_path / "set", model="./missing-model"), None)
    assert generate(config(tmp_path / "set"), sd1_pipe).complete


# 7. Names become paths ------------------------------------------------------------------------------------


def test_object_names_never_become_paths(tmp_path):
    # Regression: `--objects "../../x"` wrote mask_../../x.png through "..".
    out = tmp_path / "deep" / "out"
    names = ["../../x", "a/b", "red ring", "/etc/passwd"]
    masks = {name: np.ones((4, 4), dtype=bool) for name in names}
    result = GroundingResult("p", np.zeros((4, 4, 3), dtype=np.uint8), masks, {})
    write_grounding(result, out)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    masks_written = ["mask_.._.._x.png", "mask__etc_passwd.png", "mask_a_b.png", "mask_red_ring.png"]
    assert written == [f"deep/out/{name}" for name in sorted(["image.png", "overlay.png", *masks_written])]
    for clash, message in ((["a b", "a_b"], "would both be saved as mask_a_b.png"), ([" "], "name is empty")):
        result = GroundingResult("p", np.zeros((4, 4, 3), dtype=np.uint8), dict.fromkeys(clash, masks["a/b"]), {})
        with pytest.raises(ValueError, match=message):
            write_grounding(result, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_ground_refuses_clashing_names_before_generating(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("groundiff.sd.pipelines.load_pipeline", lambda *a, **k: pytest.fail("the pipeline loaded"))
    out = tmp_path / "grounded"
    objects = ["--objects", "dog", "dog"]
    assert main(["ground", PROMPT, "--checkpoint", str(run / "best"), *objects, "--out", str(out)]) == 2
    one_line_error(capsys, "Objects 'dog' and 'dog' would both be saved as mask_dog.png")
    assert not out.exists()


# 8. Mask R-CNN weights without pickle code execution ----------------------------------------------------


def coco_state_dict(version: str) -> dict[str, torch.Tensor]:
    """Seeded random weights with the keys and shapes of torchvision's COCO checkpoint of `version`."""
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    if version == "v1":  # torchvision's builder for the trained v1 network: frozen batch norms
        backbone = _resnet_fpn_extractor(torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d), 3)
        return torchvision.models.detection.MaskRCNN(backbone, num_classes=91).state_dict()
    return maskrcnn.build_maskrcnn("v2", pretrained=False).state_dict()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_maskrcnn_weights_load_with_weights_only_into_torchvisions_network(monkeypatch, version):
    state = coco_state_dict(version)
    small = {"min_size": 64, "max_size": 64}
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", lambda url, **kwargs: state)
    reference = maskrcnn._BUILDERS[version](weights=maskrcnn._WEIGHTS[version], **small).eval()
    calls: list[dict[str, Any]] = []

    def load_state_dict_from_url(url: str, **kwargs: Any) -> dict[str, torch.Tensor]:
        calls.append({"url": url, **kwargs})
        return state

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", load_state_dict_from_url)
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", lambda *a, **k: pytest.fail("unpickled"))
    model = maskrcnn.build_maskrcnn(version, **small).eval()
    assert [call["weights_only"] for call in calls] == [True] and calls[0]["url"] == maskrcnn._WEIGHTS[version].url

    def layout(network: torch.nn.Module) -> list[tuple[str, str, float | None]]:
        return [(n, type(m).__name__, getattr(m, "eps", None)) for n, m in network.named_modules()]

    assert layout(model) == layout(reference)
    theirs = reference.state_dict()
    assert all(torch.equal(tensor, theirs[name]) for name, tensor in model.state_dict().items())
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, expected = model([image])[0], reference([image])[0]
    for key in ("boxes", "scores", "masks"):
        torch.testing.assert_close(ours[key], expected[key])

"""Shard writing never exposes half a shard, and the shards read with tar, webdataset and our reader."""

from __future__ import annotations

import errno
import tarfile

import numpy as np
import pytest
import torch

from conftest import config, generate
from groundiff.cli import main
from groundiff.data import SampleRecord, iter_records
from groundiff.data.shards import BackgroundWriter, ShardWriter


def record(index: int) -> SampleRecord:
    image = np.full((8, 8, 3), index, dtype=np.uint8)
    masks = [np.eye(8, dtype=bool)]
    return SampleRecord(
        index, image, {"step0.mid": torch.ones(2, 2, 2)}, masks, {"prompt": "a cat", "classes": ["cat"]}
    )


def test_open_shard_is_published_when_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt), ShardWriter(tmp_path, "train-w000of001", 10) as writer:
        writer.write(record(0))
        assert list(tmp_path.iterdir())[0].name.endswith(".tar.tmp")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["train-w000of001-00000.tar"]
    assert [r.index for r in iter_records(tmp_path)] == [0]


def test_a_failed_write_drops_the_open_shard_and_keeps_finished_ones(tmp_path, monkeypatch):
    writer = ShardWriter(tmp_path, "train", 2)
    for index in range(3):
        writer.write(record(index))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "addfile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        writer.write(record(3))
    assert [p.name for p in tmp_path.iterdir()] == ["train-00000.tar"]
    assert [r.index for r in iter_records(tmp_path)] == [0, 1]


def test_shards_read_with_webdataset(sd1_pipe, tmp_path):
    webdataset = pytest.importorskip("webdataset")
    generate(config(tmp_path / "set", num_samples=3), sd1_pipe)
    urls = [str(p) for p in sorted((tmp_path / "set").glob("*.tar"))]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert sorted(s["__key__"] for s in samples) == ["00000000", "00000001", "00000002"]
    assert samples[0]["png"].shape == (32, 32, 3) and set(samples[0]["json"]) >= {"prompt", "classes", "seed"}
    assert "features.safetensors" in samples[0] and "mask1.png" in samples[0]


def test_config_file_with_flags_on_top(tmp_path, capsys):
    path = tmp_path / "set.yaml"
    path.write_text(
        f"out: {tmp_path / 'set'}\nset: test-unseen\nmodel: tiny-sd1\nlabeler: none\nscorer: none\n"
        "num_samples: 5\nsteps: 2\nprogress: false\n"
    )
    assert main(["generate", "--config", str(path), "--num-samples", "3", "--objects-per-prompt", "1"]) == 0
    assert "set complete: 3 samples, 0 discarded" in capsys.readouterr().out
    records = list(iter_records(tmp_path / "set"))
    assert [len(r.classes) for r in records] == [1, 1, 1] and records[0].meta["set"] == "test-unseen"
    path.write_text("outt: somewhere\n")
    assert main(["generate", "--config", str(path)]) == 2
    assert "unknown fields outt" in capsys.readouterr().err


def test_background_writer_keeps_order_and_reraises_errors(tmp_path, monkeypatch):
    (tmp_path / "ok").mkdir()
    with ShardWriter(tmp_path / "ok", "train", 3) as writer, BackgroundWriter(writer) as background:
        for index in range(5):
            background.write(record(index))
    assert [r.index for r in iter_records(tmp_path / "ok")] == [0, 1, 2, 3, 4]

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "addfile", disk_full)
    (tmp_path / "full").mkdir()
    writer = ShardWriter(tmp_path / "full", "train", 3)
    with pytest.raises(OSError, match="No space left"), writer, BackgroundWriter(writer) as background:
        for index in range(5):
            background.write(record(index))
    assert not list((tmp_path / "full").iterdir())

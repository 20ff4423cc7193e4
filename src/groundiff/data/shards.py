"""Tar shards that appear only when complete, and random access to the samples inside them.

A shard is written under `NAME.tar.tmp`, flushed, checked for its full length, fsync'ed and renamed
to `NAME.tar`, so a reader or a resumed run never sees half a shard; a killed writer or a full disk
leaves at most one `.tmp` file, which the next run deletes (its samples are regenerated: generation
is deterministic per sample index). `hold_lock` keeps a second process from writing the same shards.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import queue
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundiff.data.records import FEATURES_EXT, SampleRecord, decode_record, encode_record, sample_key
from groundiff.files import fsync_directory

SHARD_SUFFIX = ".tar"
TEMP_SUFFIX = ".tar.tmp"


class ShardError(RuntimeError):
    """A shard that cannot be read: truncated, corrupted or not a tar file."""


REGENERATE = (
    "Delete it and run `groundiff generate` again with the same config: its samples are regenerated identically."
)


class ShardWriter:
    """Writes samples to numbered shards `{prefix}-{n:05d}.tar` of at most `samples_per_shard` samples.

    Use as a context manager: on exit the open shard is published, also after Ctrl-C or an error
    outside `write`, so finished samples are never lost. A failure while writing or publishing a
    shard (disk full) deletes it instead, since it may hold half a sample: only whole shards get
    their final name.
    """

    def __init__(self, folder: Path, prefix: str, samples_per_shard: int, first_number: int = 0) -> None:
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be at least 1, got {samples_per_shard}.")
        self.folder = folder
        self.prefix = prefix
        self.samples_per_shard = samples_per_shard
        self.number = first_number
        self.published: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    @property
    def _final_path(self) -> Path:
        return self.folder / f"{self.prefix}-{self.number:05d}{SHARD_SUFFIX}"

    @property
    def _temp_path(self) -> Path:
        return self._final_path.with_suffix(TEMP_SUFFIX)

    def write(self, record: SampleRecord) -> None:
        files = encode_record(record)  # encode first: a failure here leaves the shard untouched
        try:
            if self._tar is None:
                # Stays open across `write` calls; `publish` or `abandon` closes it.
                self._tar = tarfile.open(self._temp_path, "w")  # noqa: SIM115
            for extension, data in files.items():
                info = tarfile.TarInfo(f"{record.key}.{extension}")
                info.size = len(data)
                self._tar.addfile(info, io.BytesIO(data))
            self._count += 1
            if self._count >= self.samples_per_shard:
                self.publish()
        except BaseException:
            self.abandon()
            raise

    def publish(self) -> None:
        """Close the open shard, check that every byte reached the disk, make it durable, give it its final name."""
        if self._tar is None:
            return
        temp = self._temp_path
        self._tar.close()
        # The archive ends with two zero blocks, padded to a whole record (`close` writes both).
        expected = -(-self._tar.offset // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
        if temp.stat().st_size != expected:
            raise OSError(errno.EIO, f"Shard {str(temp)!r} holds {temp.stat().st_size} of its {expected} bytes")
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, self._final_path)
        fsync_directory(self.folder)
        self.published.append(self._final_path)
        self._tar, self._count = None, 0
        self.number += 1

    def abandon(self) -> None:
        """Drop the open shard (its samples will be generated again); also when the disk is full."""
        if self._tar is None:
            return
        tar, self._tar, self._count = self._tar, None, 0
        try:
            with contextlib.suppress(OSError):  # closing writes the end blocks, which a full disk refuses
                tar.close()
        finally:
            self._temp_path.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.publish()
        except BaseException:
            self.abandon()
            raise


@dataclass(frozen=True)
class SampleLocation:
    """Where the files of one sample sit inside a shard: extension → (byte offset, size)."""

    shard: Path
    index: int
    files: dict[str, tuple[int, int]]


def index_shard(path: Path) -> list[SampleLocation]:
    """Every sample of a shard with the byte ranges of its files, without reading file contents.

    Raises:
        ShardError: the shard is truncated or not a tar file; the message says how to recover.
    """
    grouped: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                grouped.setdefault(key, {})[extension] = (member.offset_data, member.size)
                if member.offset_data + member.size > path.stat().st_size:
                    raise tarfile.ReadError(f"member {member.name} runs past the end of the file")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ShardError(f"Shard {str(path)!r} is unreadable or truncated ({error}). {REGENERATE}") from error
    locations = []
    for key, files in grouped.items():
        if "json" not in files or "png" not in files:
            raise ShardError(f"Shard {str(path)!r} holds an incomplete sample {key!r} (files: {sorted(files)}).")
        locations.append(SampleLocation(path, int(key), files))
    return locations


def read_files(location: SampleLocation, extensions: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """The raw bytes of a sample's files (all, or only `extensions`)."""
    wanted = location.files if extensions is None else {e: location.files[e] for e in extensions if e in location.files}
    files = {}
    with open(location.shard, "rb") as handle:
        for extension, (offset, size) in sorted(wanted.items(), key=lambda item: item[1][0]):
            handle.seek(offset)
            files[extension] = handle.read(size)
    return files


def read_record(location: SampleLocation, *, features: bool = True) -> SampleRecord:
    """One sample from its shard; `features=False` skips the U-Net maps (the largest part).

    Raises:
        ShardError: a file of the sample cannot be decoded (corrupt bytes); the message names shard and sample.
    """
    wanted = None if features else tuple(e for e in location.files if e != FEATURES_EXT)
    files = read_files(location, wanted)
    try:
        return decode_record(location.index, files, features=features)
    except Exception as error:  # safetensors, PIL and json each raise their own type
        raise ShardError(
            f"Sample {sample_key(location.index)} of shard {str(location.shard)!r} is corrupt "
            f"({type(error).__name__}: {error}). {REGENERATE}"
        ) from error


def list_shards(folder: Path) -> list[Path]:
    """Complete shards of a set folder, sorted by name."""
    return sorted(folder.glob(f"*{SHARD_SUFFIX}"))


def iter_records(folder: Path, *, features: bool = True) -> Iterator[SampleRecord]:
    """Every sample of a set folder, shard by shard."""
    for shard in list_shards(folder):
        for location in index_shard(shard):
            yield read_record(location, features=features)


def iter_metadata(folder: Path) -> Iterator[dict[str, Any]]:
    """The JSON metadata of every sample of a set folder, without decoding images or features."""
    for shard in list_shards(folder):
        for location in index_shard(shard):
            yield json.loads(read_files(location, ("json",))["json"])


class BackgroundWriter:
    """Runs `ShardWriter.write` (PNG and safetensors encoding, disk) on a thread, so the generator's
    next batch overlaps with it; a bounded queue keeps memory flat. Errors surface on the next call.

    Use as a context manager inside the `ShardWriter`'s: exit waits for every queued record.
    """

    def __init__(self, writer: ShardWriter, depth: int = 4) -> None:
        self.writer = writer
        self._queue: queue.Queue[SampleRecord | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="groundiff-shard-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (record := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.writer.write(record)
                except BaseException as error:  # re-raised in the generating thread
                    self._error = error

    def write(self, record: SampleRecord) -> None:
        self._raise_pending()
        self._queue.put(record)

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc[0] is None:
            self._raise_pending()

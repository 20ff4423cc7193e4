"""Files that are whole or absent: atomic writes, directory fsync, and a per-file lock against a second
process. Every step that publishes a file (shards, checkpoints, evaluations, reports) uses these."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class FolderBusyError(RuntimeError):
    """Another live process holds the lock on the files this one would write."""


@contextlib.contextmanager
def hold_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) while the block runs, for `what`.

    The lock is the kernel's (`flock`), so it goes with its process, also on SIGKILL: no stale lock is
    ever left to delete by hand. The file itself stays (deleting it would race with a waiting process).

    Raises:
        FolderBusyError: another live process holds the lock; the message names its process id.
    """
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise FolderBusyError(
                f"Another process (pid {owner}) is writing {what} (it holds {str(path)!r}); wait for it to "
                f"finish, or stop it and run again (its finished work is kept)."
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield  # closing the file releases the lock


def is_locked(path: Path) -> bool:
    """Whether a live process holds `hold_lock` on `path`."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomic(path: Path, text: str) -> None:
    """Write under a temporary name and rename it, so readers see the old or the new file, never half."""
    temp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        temp.write_text(text)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)  # left only when writing failed (disk full)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """`write_text_atomic` of indented, key-sorted JSON."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))

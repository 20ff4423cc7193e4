"""What a set folder holds: the indices on disk, and the manifest written when the set is complete."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from groundiff.data.shards import REGENERATE, ShardError, index_shard, list_shards, read_files
from groundiff.environment import environment_report
from groundiff.files import write_json_atomic

MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"  # the GenerateConfig that made the set
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<number>\d{5})\.tar$")


def collect_done(folder: Path) -> tuple[set[int], dict[str, int]]:
    """Sample indices in complete shards, and per shard-name prefix the next free shard number.

    Raises:
        ShardError: a shard is unreadable, or a sample index appears twice (two runs with different
            worker counts wrote the same set at once).
    """
    done: set[int] = set()
    next_number: dict[str, int] = {}
    for shard in list_shards(folder):
        match = _SHARD_NAME.match(shard.name)
        if match:
            prefix, number = match["prefix"], int(match["number"])
            next_number[prefix] = max(next_number.get(prefix, 0), number + 1)
        for location in index_shard(shard):
            if location.index in done:
                raise ShardError(
                    f"Sample {location.index} appears twice in {str(folder)!r} (again in {shard.name}). Two runs "
                    f"with different worker counts wrote this set at once; delete one of the duplicate shards."
                )
            done.add(location.index)
    return done, next_number


def read_set_config(folder: Path) -> dict[str, Any]:
    """The GenerateConfig fields a set was made with (its `config.json`).

    Raises:
        FileNotFoundError: `folder` is no set; the message says how to make one.
    """
    fix = "pass a set folder written by `groundiff generate` or `groundiff truth-set`"
    return _read_set_file(folder / CONFIG_FILE, f"{str(folder)!r} has no {CONFIG_FILE}; {fix}.")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a complete set, read without checking the shards (see `check_complete` for that).

    Raises:
        FileNotFoundError: the set is incomplete (no manifest); the message says how to finish it.
    """
    fix = "run `groundiff generate` with its config again to finish it"
    return _read_set_file(folder / MANIFEST_FILE, f"Set {str(folder)!r} is incomplete (no {MANIFEST_FILE}): {fix}.")


def _read_set_file(path: Path, missing: str) -> dict[str, Any]:
    """The JSON mapping in `path`, or a FileNotFoundError with the message `missing`."""
    if not path.exists():
        raise FileNotFoundError(missing)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def check_complete(folder: Path) -> dict[str, Any]:
    """The manifest of a complete set, once its shards are checked against it (names and sizes, no reading).

    Raises:
        ShardError: the set has no manifest (it is still being generated, or was stopped), or a shard
            the manifest lists is missing or changed size, or a shard is there that it does not list.
    """
    path = folder / MANIFEST_FILE
    if not path.exists():
        raise ShardError(
            f"Set {str(folder)!r} is incomplete (no {MANIFEST_FILE}; shards on disk: {len(list_shards(folder))}): "
            f"run `groundiff generate` with its config again to finish it, or wait for the run that is writing it."
        )
    manifest = json.loads(path.read_text())
    listed = {shard["name"]: shard["bytes"] for shard in manifest["shards"]}
    found = {shard.name: shard.stat().st_size for shard in list_shards(folder)}
    for name in sorted(set(listed) | set(found)):
        damaged = f"Set {str(folder)!r} is damaged: shard {name}"
        if name not in found:
            raise ShardError(
                f"{damaged}, listed in {MANIFEST_FILE}, is missing. Run `groundiff generate` again with the same "
                f"config: its samples are regenerated identically."
            )
        if name not in listed:
            raise ShardError(f"{damaged} is not listed in {MANIFEST_FILE}. {REGENERATE}")
        if found[name] != listed[name]:
            size = f"has {found[name]} bytes, {listed[name]} when the set was finished"
            raise ShardError(f"{damaged} {size}. {REGENERATE}")
    return manifest


def write_manifest(folder: Path, config: dict[str, Any], vocabulary: tuple[str, ...]) -> dict[str, Any]:
    """Summarise a complete set in `manifest.json`: counts, discards per class, bytes per sample, config."""
    shards: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    part_bytes = Counter[str]()
    for shard in list_shards(folder):
        locations = index_shard(shard)
        shards.append({"name": shard.name, "samples": len(locations), "bytes": shard.stat().st_size})
        for location in locations:
            metas.append(json.loads(read_files(location, ("json",))["json"]))
            for extension, (_, size) in location.files.items():
                part_bytes[_part_name(extension)] += size
    if not metas:
        raise ShardError(f"Set {str(folder)!r} has no samples; nothing to summarise.")
    total_bytes = sum(s["bytes"] for s in shards)
    manifest = {
        "samples": len(metas),
        "discarded": sum(len(m["discarded_attempts"]) for m in metas),
        "bytes_per_sample": total_bytes / len(metas),
        "bytes_per_sample_by_part": {k: v / len(metas) for k, v in sorted(part_bytes.items())},
        "per_class": discard_rates(metas, vocabulary),
        "iqa_mean": _mean([m["iqa"] for m in metas if m.get("iqa") is not None]),
        "shards": shards,
        "config": config,
        "versions": environment_report(),
    }
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    return manifest


def discard_rates(metas: list[dict[str, Any]], vocabulary: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per class: kept samples, attempts that named it, attempts where the labeler missed it, miss rate."""
    kept, attempts, missed = Counter[str](), Counter[str](), Counter[str]()
    for meta in metas:
        kept.update(meta["classes"])
        attempts.update(meta["classes"])
        for failure in meta["discarded_attempts"]:
            attempts.update(failure["classes"])
            missed.update(failure["missing"])
    return {
        name: {
            "kept": kept[name],
            "attempts": attempts[name],
            "missed": missed[name],
            "miss_rate": missed[name] / attempts[name] if attempts[name] else 0.0,
        }
        for name in vocabulary
        if attempts[name]
    }


def _part_name(extension: str) -> str:
    return "masks" if extension.startswith("mask") else {"png": "image"}.get(extension, extension.split(".")[0])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None

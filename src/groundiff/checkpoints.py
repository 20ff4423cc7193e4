"""Grounding-model checkpoints: a folder of safetensors + JSON (no pickle), replaced atomically.

model.safetensors       model weights
checkpoint.json         model config, feature layout, text width, training config, metrics
training.safetensors    optimizer tensors and torch RNG state (resume only)
training.json           optimizer scalars, epoch, numpy/python RNG state (resume only)
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from groundiff.data.shards import fsync_directory

MODEL_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
STATE_TENSORS = "training.safetensors"
STATE_META = "training.json"


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    training: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint folder under a temporary name, then swap it in: a crash leaves the old one."""
    temp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(temp / MODEL_FILE))
    (temp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    if optimizer is not None:
        tensors, scalars = _split_optimizer_state(optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(temp / STATE_TENSORS))
        state = {
            "optimizer": scalars,
            "numpy_rng": _numpy_state_to_json(np.random.get_state(legacy=True)),  # type: ignore[arg-type]
            "python_rng": _python_state_to_json(random.getstate()),
            **(training or {}),
        }
        (temp / STATE_META).write_text(json.dumps(state))
    old = folder.with_name(f"{folder.name}.old{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(temp, folder)
    fsync_directory(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint_meta(folder: Path) -> dict[str, Any]:
    if not (folder / META_FILE).exists():
        raise FileNotFoundError(
            f"{str(folder)!r} is no grounding checkpoint (no {META_FILE}); pass a folder written by `groundiff train`."
        )
    return json.loads((folder / META_FILE).read_text())


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / MODEL_FILE))


def restore_training_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load optimizer and RNG states saved with `optimizer`; returns the saved training dict (epoch, …)."""
    if not (folder / STATE_META).exists():
        raise FileNotFoundError(f"{str(folder)!r} has no training state to resume from (only the weights).")
    state = json.loads((folder / STATE_META).read_text())
    tensors = load_file(str(folder / STATE_TENSORS))
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(_join_optimizer_state(tensors, state.pop("optimizer")))
    np.random.set_state(_numpy_state_from_json(state.pop("numpy_rng")))
    random.setstate(_python_state_from_json(state.pop("python_rng")))
    return state


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state → (tensors under `state.{param}.{key}`, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for param, values in state["state"].items():
        scalars["state"][str(param)] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param}.{key}"] = value.contiguous()
            else:
                scalars["state"][str(param)][key] = value
    return tensors, scalars


def _join_optimizer_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(p): dict(v) for p, v in scalars["state"].items()}
    for name, tensor in tensors.items():
        _, param, key = name.split(".", 2)
        state.setdefault(int(param), {})[key] = tensor
    return {"state": state, "param_groups": scalars["param_groups"]}


def _numpy_state_to_json(state: tuple[Any, ...]) -> list[Any]:
    return [state[0], state[1].tolist(), *state[2:]]


def _numpy_state_from_json(state: list[Any]) -> tuple[Any, ...]:
    return (state[0], np.array(state[1], dtype=np.uint32), *state[2:])


def _python_state_to_json(state: tuple[Any, ...]) -> list[Any]:
    return [state[0], list(state[1]), state[2]]


def _python_state_from_json(state: list[Any]) -> tuple[Any, ...]:
    return (state[0], tuple(state[1]), state[2])

"""Grounding-model checkpoints: a folder of safetensors + JSON (no pickle), replaced atomically.

model.safetensors       model weights
checkpoint.json         model config, feature layout, text width, training config, metrics, and the
                        sha256 of each safetensors file (checked on load: a flipped bit is an error)
training.safetensors    optimizer tensors and torch RNG state (resume only)
training.json           optimizer scalars, epoch, numpy/python RNG state (resume only)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from groundiff.files import fsync_directory
from groundiff.model.builder import build_grounding_model
from groundiff.model.config import GroundingModelConfig
from groundiff.model.grounding import GroundingModel

MODEL_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
STATE_TENSORS = "training.safetensors"
STATE_META = "training.json"
_REWRITE = "the checkpoint is damaged: restore it from a copy, or train again (`groundiff train`)."


class CheckpointError(RuntimeError):
    """A checkpoint folder that is incomplete, corrupt or changed since it was written."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What `checkpoint.json` records: enough to rebuild the model, embed class names as in training,
    capture features as the training set did, and resume or audit the training.

    Attributes:
        model_config: `GroundingModelConfig.to_dict()`.
        feature_shapes: `step{S}.{block}` -> (channels, height, width) of the maps the model reads.
        text_width: width of the frozen text encoder's token embeddings.
        text_model: the diffusion model of the training set (its text encoder is the model's).
        set_config: the training set's GenerateConfig (prompt template, capture and sampler settings).
        template, end_of_text, subtract_others: how class names are embedded (see `groundiff.text`).
        train_config: the TrainConfig fields; threads: torch CPU threads of the run.
        epoch: epochs done; val: validation result of that epoch; sha256: checksum of each weights file.
    """

    model_config: dict[str, Any]
    feature_shapes: dict[str, tuple[int, int, int]]
    text_width: int
    text_model: str
    set_config: dict[str, Any]
    template: str
    end_of_text: bool
    train_config: dict[str, Any] = field(default_factory=dict)
    subtract_others: bool = False
    threads: int | None = None
    epoch: int = 0
    val: dict[str, Any] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> CheckpointMeta:
        """The metadata in `data` (read from `source`); unknown keys of newer versions are ignored.

        Raises:
            CheckpointError: a field without a default is missing.
        """
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise CheckpointError(f"{source!r} lacks {', '.join(missing)}; {_REWRITE}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["feature_shapes"] = {
            k: (int(v[0]), int(v[1]), int(v[2])) for k, v in sorted(data["feature_shapes"].items())
        }
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["feature_shapes"] = {k: list(v) for k, v in self.feature_shapes.items()}
        return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    meta: CheckpointMeta,
    optimizer: torch.optim.Optimizer | None = None,
    training: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint folder under a temporary name, then swap it in: a crash leaves the old one.

    `checkpoint.json` gets `sha256`: the checksum of each safetensors file, which the loaders verify.
    """
    temp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(temp / MODEL_FILE))
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
    checksums = {path.name: sha256_file(path) for path in sorted(temp.glob("*.safetensors"))}
    (temp / META_FILE).write_text(json.dumps({**meta.to_json(), "sha256": checksums}, indent=2, sort_keys=True))
    for path in temp.iterdir():  # durable before the rename makes them the checkpoint
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    old = folder.with_name(f"{folder.name}.old{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(temp, folder)
    fsync_directory(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoint(folder: Path) -> None:
    """Finish or drop the `save_checkpoint` of `folder` that a killed process left (call with no save running).

    Killed between its two renames, `folder` is missing while its new version is complete beside it:
    that version is put in place. Any other leftover temporary or old folder is deleted.
    """
    leftovers = sorted(folder.parent.glob(f"{folder.name}.tmp*")) + sorted(folder.parent.glob(f"{folder.name}.old*"))
    if not folder.exists():
        for temp in sorted(folder.parent.glob(f"{folder.name}.tmp*")):
            if temp.with_name(temp.name.replace(".tmp", ".old", 1)).exists():  # both renames' sources
                os.replace(temp, folder)
                fsync_directory(folder.parent)
                break
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint_meta(folder: Path) -> CheckpointMeta:
    """The metadata of a checkpoint folder.

    Raises:
        FileNotFoundError: `folder` is no checkpoint.
        CheckpointError: `checkpoint.json` is not JSON or lacks a field the loaders need.
    """
    path = folder / META_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{str(folder)!r} is no grounding checkpoint (no {META_FILE}); pass a folder written by `groundiff train`."
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({error}); {_REWRITE}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{str(path)!r} holds no JSON object; {_REWRITE}")
    return CheckpointMeta.from_json(meta, str(path))


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint, after checking them against the checksum it recorded.

    Raises:
        CheckpointError: the file is missing, changed since it was written, or not safetensors.
    """
    return _load_checked(folder, MODEL_FILE)


def _load_checked(folder: Path, name: str) -> dict[str, torch.Tensor]:
    path = folder / name
    if not path.exists():
        raise CheckpointError(f"{str(folder)!r} has no {name}; {_REWRITE}")
    # Checkpoints written before checksums were recorded load unchecked.
    expected = json.loads((folder / META_FILE).read_text()).get("sha256", {}).get(name)
    if expected is not None and sha256_file(path) != expected:
        raise CheckpointError(f"{str(path)!r} does not match the checksum recorded when it was written; {_REWRITE}")
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{str(path)!r} is unreadable ({type(error).__name__}: {error}); {_REWRITE}") from None


def restore_training_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load optimizer and RNG states saved with `optimizer`; returns the saved training dict (epoch, …)."""
    if not (folder / STATE_META).exists():
        raise FileNotFoundError(f"{str(folder)!r} has no training state to resume from (only the weights).")
    state = json.loads((folder / STATE_META).read_text())
    tensors = _load_checked(folder, STATE_TENSORS)
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


def load_grounding_model(folder: Path, device: str = "cpu") -> tuple[GroundingModel, CheckpointMeta]:
    """A trained model in eval mode and its checkpoint metadata."""
    meta = load_checkpoint_meta(folder)
    config = GroundingModelConfig.from_dict(meta.model_config)
    model = build_grounding_model(config, meta.feature_shapes, meta.text_width)
    model.load_state_dict(load_weights(folder))
    return model.to(device).eval(), meta


def export_checkpoint(source: Path, target: Path, *, dtype: torch.dtype = torch.float16) -> CheckpointMeta:
    """Write the model of checkpoint `source` to `target` for shipping: weights in `dtype`, no training
    state, and the run's folder paths cut to their last part (they named the trainer's machine).

    The loaders read the weights back into float32 parameters.
    """
    model, meta = load_grounding_model(source)
    paths = ("train", "val", "out")
    train_config = {k: Path(v).name if k in paths and isinstance(v, str) else v for k, v in meta.train_config.items()}
    shipped = replace(meta, train_config=train_config, sha256={})
    save_checkpoint(target, model.to(dtype), shipped)
    return load_checkpoint_meta(target)

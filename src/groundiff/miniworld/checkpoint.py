"""Resumable training state in safetensors (no pickle): model, optional EMA copy, AdamW moments, step."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def save_training_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, ema: nn.Module | None = None
) -> None:
    """Write model, EMA and optimizer tensors plus the step to `path`, atomically (temp file + rename)."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().contiguous() for k, v in ema.state_dict().items()})
    opt_state = optimizer.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{index}.{key}"] = torch.as_tensor(value).detach().contiguous()
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]
    metadata = {"step": str(step), "param_groups": json.dumps(groups)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def load_training_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, ema: nn.Module | None = None
) -> int:
    """Restore what `save_training_state` wrote (the optimizer only if the file has its moments); returns the step."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        ema.load_state_dict(ema_state or model.state_dict())
    opt_keys = [k for k in tensors if k.startswith("opt.")]
    if optimizer is not None and opt_keys:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key in opt_keys:
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = tensors[key]
        current = optimizer.state_dict()
        groups = json.loads(metadata["param_groups"])
        for group, saved in zip(current["param_groups"], groups, strict=True):
            group.update({k: v for k, v in saved.items() if k in ("lr", "betas", "eps", "weight_decay")})
        optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    return int(metadata["step"])

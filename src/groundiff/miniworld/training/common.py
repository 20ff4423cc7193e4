"""The parts' shared settings, run config, render sets and optimizer loop (resume, log, checkpoint, stop)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from groundiff.miniworld.checkpoint import load_training_state, save_training_state
from groundiff.miniworld.datasets import EVAL_FIRST_SEED, TRAIN_FIRST_SEED, cached_render_set
from groundiff.miniworld.renderer import RenderedSet

log = logging.getLogger(__name__)


PARTS = ("vae", "clip", "unet", "unet-ft", "unet-v2", "unet-crowd", "labeler", "publish")
UNET_PARTS = ("unet", "unet-ft", "unet-v2", "unet-crowd")  # one per version in groundiff.miniworld.versions
# The shipped U-Net ran 10,317 steps at batch 32; a fine-tune is brief and gentler, as community fine-tunes are.
DEFAULT_STEPS = {"vae": 3000, "clip": 3000, "labeler": 3000, "unet": 200_000, "unet-v2": 200_000}
DEFAULT_STEPS |= {"unet-ft": 2000, "unet-crowd": 2000}
DEFAULT_BATCH = {"vae": 32, "clip": 128, "labeler": 32} | {part: 32 for part in UNET_PARTS}
DEFAULT_LR = {"vae": 5e-4, "clip": 1e-3, "labeler": 2e-3, "unet": 3e-4, "unet-v2": 3e-4}
DEFAULT_LR |= {"unet-ft": 1e-4, "unet-crowd": 1e-4}
TRAIN_SCENES = 60_000
EVAL_SCENES = 2_000


@dataclass
class TrainConfig:
    """One training run of one part.

    Attributes:
        part: one of PARTS.
        run_dir: checkpoints, logs and the render cache live here (`<run_dir>/<part>/`).
        steps: stop after this many optimizer steps in total (across resumes).
        minutes: stop after this many minutes of this invocation (a checkpoint is written first).
        batch_size, lr: optimizer settings.
        resume: continue from `<run_dir>/<part>/checkpoint.safetensors`.
        seed: batch i draws its samples from (seed, i), so resumed runs see the same batches.
        threads: torch CPU threads.
        checkpoint_minutes: minutes between checkpoints.
    """

    part: str
    run_dir: Path = Path("runs/miniworld")
    steps: int | None = None
    minutes: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    resume: bool = False
    seed: int = 0
    threads: int = 1  # 2 threads beside other jobs on 2 cores ran 4-10x slower here
    checkpoint_minutes: float = 4.0

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"Unknown part {self.part!r}; choose one of {', '.join(PARTS)}.")
        self.run_dir = Path(self.run_dir)
        if self.part != "publish":
            self.steps = self.steps or DEFAULT_STEPS[self.part]
            self.batch_size = self.batch_size or DEFAULT_BATCH[self.part]
            self.lr = self.lr or DEFAULT_LR[self.part]

    @property
    def batch(self) -> int:
        """The resolved batch size (training parts only)."""
        if self.batch_size is None:
            raise ValueError(f"Part {self.part!r} trains nothing and has no batch size.")
        return self.batch_size

    @property
    def learning_rate(self) -> float:
        """The resolved learning rate (training parts only)."""
        if self.lr is None:
            raise ValueError(f"Part {self.part!r} trains nothing and has no learning rate.")
        return self.lr

    @property
    def part_dir(self) -> Path:
        return self.run_dir / self.part

    @property
    def checkpoint_path(self) -> Path:
        return self.part_dir / "checkpoint.safetensors"


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 in [0, 255] → (B, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def batch_indices(seed: int, step: int, count: int, batch_size: int) -> np.ndarray:
    return np.random.default_rng([seed, step]).integers(0, count, batch_size)


def run_loop(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[int], dict[str, torch.Tensor]],
    *,
    ema: nn.Module | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
) -> int:
    """The shared optimizer loop: resume, step, log, checkpoint, stop on steps or minutes. Returns the last step."""
    step = 0
    if config.resume and config.checkpoint_path.exists():
        step = load_training_state(config.checkpoint_path, model, optimizer, ema)
        log.info("%s: resumed from %s at step %d", config.part, config.checkpoint_path, step)
    start = last_log = last_ckpt = time.time()
    steps_since_log = 0
    warmup = 200
    base_lr = config.lr
    assert config.steps is not None and base_lr is not None
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = base_lr * min(1.0, (step + 1) / warmup)
        losses = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        steps_since_log += 1
        if ema is not None:
            decay = min(0.999, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
        now = time.time()
        if now - last_log > 60 or step == config.steps:
            parts = " ".join(f"{k} {v.item():.4f}" for k, v in losses.items())
            log.info("%s step %d %s  %.2f steps/s", config.part, step, parts, steps_since_log / (now - last_log))
            last_log, steps_since_log = now, 0
        out_of_time = config.minutes is not None and now - start > 60 * config.minutes
        if now - last_ckpt > 60 * config.checkpoint_minutes or out_of_time or step == config.steps:
            save_training_state(config.checkpoint_path, model, optimizer, step, ema)
            log.info("%s: checkpoint at step %d (%.1f min this run)", config.part, step, (now - start) / 60)
            last_ckpt = now
            if evaluate is not None:
                log.info("%s eval at step %d: %s", config.part, step, evaluate())
        if out_of_time:
            break
    return step


def train_set(config: TrainConfig) -> RenderedSet:
    return cached_render_set(config.run_dir / "cache", TRAIN_FIRST_SEED, TRAIN_SCENES)


def eval_set(config: TrainConfig) -> RenderedSet:
    return cached_render_set(config.run_dir / "cache", EVAL_FIRST_SEED, EVAL_SCENES)


def tokenize(texts: Sequence[str], length: int) -> torch.Tensor:
    from groundiff.sd.tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    return tokenizer(
        list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).input_ids

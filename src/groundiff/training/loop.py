"""`train`: fit the grounding model on a generated set, keep the best checkpoint by validation mIoU.

Everything that differs between the paper's experiments (prompt template, end-of-text baseline,
loss, dropout, epochs, model sizes) is a field of `TrainConfig`; shipped YAML files in configs/
name each experiment.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from groundiff.data.batching import ClassEmbedder, GroundingBatch, NegativeQueries, collate, query_options
from groundiff.data.manifest import CONFIG_FILE, read_manifest, read_set_config
from groundiff.data.sets import check_training_set, open_set, set_model_name
from groundiff.evaluation.evaluate import evaluate_dataset
from groundiff.files import hold_lock
from groundiff.model import GroundingModel, GroundingModelConfig, build_grounding_model
from groundiff.model.builder import default_level_channels
from groundiff.model.checkpoint import (
    CheckpointMeta,
    load_checkpoint_meta,
    load_grounding_model,
    load_weights,
    recover_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from groundiff.sd.pipelines import load_text_components
from groundiff.text import padded_tokens
from groundiff.training.answer_rule import record_answer_rule
from groundiff.training.config import RESUME_FREE_FIELDS, TrainConfig
from groundiff.training.losses import grounding_loss, presence_loss, word_loss
from groundiff.training.mining import mine_negatives

log = logging.getLogger(__name__)

BEST, LAST = "best", "last"


@dataclass
class TrainReport:
    out: Path
    best_epoch: int
    best_val_miou: float
    samples_per_s: float
    data_wait_fraction: float
    history: list[dict[str, float]]


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def start_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun / accelerate (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def amp_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(config: TrainConfig) -> TrainReport:
    """Train a grounding model; writes `out/best`, `out/last`, `history.csv` and `curves.png`.

    Raises:
        FileExistsError: `out` already holds a run and `resume` was not asked for (nothing is overwritten).
        ValueError: `out` is a file; a set is of the wrong kind; the sets' feature layouts differ.
        ShardError: a set is incomplete or damaged.
        FolderBusyError: another process trains into `out`.
        FloatingPointError: the loss became NaN or infinite (the message names the samples).
    """
    return _run(config, resume=False)


def resume(config: TrainConfig) -> TrainReport:
    """Continue an interrupted run from `out/last`, exactly as if it had not stopped.

    The config must be the run's, except for `RESUME_FREE_FIELDS` (`epochs` only raised): a changed
    field is refused by name. A run stopped before its first epoch finished starts from the beginning.
    """
    return _run(config, resume=True)


def _run(config: TrainConfig, *, resume: bool) -> TrainReport:
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder; pass a folder path for the run.")
    if resume and not out.is_dir():
        raise FileNotFoundError(f"{str(out)!r} holds no run to resume; check --out, or drop --resume to start one.")
    out.mkdir(parents=True, exist_ok=True)
    # One process trains into a folder; under DDP, rank 0 holds the lock for every rank.
    first = int(os.environ.get("RANK", 0)) == 0
    lock = hold_lock(out / "train.lock", f"the training run {str(out)!r}") if first else contextlib.nullcontext()
    with lock:
        if first:
            for name in (BEST, LAST):
                recover_checkpoint(out / name)  # a save that a kill interrupted
        from_last = _resume_point(config, resume)
        return _Trainer(config).run(resume=from_last)


def _resume_point(config: TrainConfig, resume: bool) -> bool:
    """Whether the run continues from `out/last`, once it is clear that it may."""
    out = Path(config.out)
    if not resume:
        if (out / LAST).exists() or (out / BEST).exists():
            raise FileExistsError(
                f"{str(out)!r} already holds a training run; pass --resume to continue it, or another --out."
            )
        return False
    if not (out / LAST).exists():
        log.warning("%s has no finished epoch to resume from; training from the first epoch.", out)
        return False
    meta = load_checkpoint_meta(out / LAST)
    stored, now = meta.train_config, config.content()
    changed = sorted(k for k in now if k in stored and stored[k] != now[k])
    if changed:
        details = "; ".join(f"{k}: run has {stored[k]!r}, now {now[k]!r}" for k in changed)
        raise ValueError(
            f"Run {str(out)!r} was trained with a different config ({details}). Resume it with the original values "
            f"(only {', '.join(RESUME_FREE_FIELDS)} may change), or pass another --out for a new run."
        )
    done = int(meta.epoch)
    if config.epochs < done:
        raise ValueError(
            f"Run {str(out)!r} has trained {done} epochs, more than --epochs {config.epochs}; "
            f"pass --epochs {done} or more to continue it."
        )
    set_file = Path(config.train) / CONFIG_FILE
    if set_file.exists() and read_set_config(Path(config.train)) != meta.set_config:
        raise ValueError(
            f"Training set {config.train!r} was regenerated with another config since run {str(out)!r} started; "
            f"resume with the original set, or pass another --out for a new run."
        )
    if config.threads is None and meta.threads != torch.get_num_threads():
        log.warning(
            "%s ran on %s CPU threads, this process has %d: the resumed epochs will not repeat bit for bit "
            "(set --threads to fix the count).",
            out,
            meta.threads,
            torch.get_num_threads(),
        )
    return True


def train_or_resume(config: TrainConfig) -> TrainReport:
    """Train, or continue the run already in `config.out`; a finished run only reports (nothing is retrained)."""
    return resume(config) if Path(config.out).is_dir() else train(config)


class _Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        if config.threads is not None:
            # CPU float sums depend on how work is split over threads: results repeat per thread count.
            torch.set_num_threads(config.threads)
        self.rank, self.world = start_distributed()
        self.device = torch.device(config.device or (f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"))
        # 1. Data and the frozen text side: complete sets of the right kinds, with the same feature layout.
        check_training_set(config.train, "train")
        check_training_set(config.val, "val")
        self.train_set = open_set(config.train, config.max_train_samples)
        self.val_set = open_set(config.val)
        model_name = set_model_name(config.train)
        if set_model_name(config.val) != model_name:
            raise ValueError(
                f"Train set {config.train!r} comes from {model_name!r}, val set {config.val!r} from "
                f"{set_model_name(config.val)!r}: features of different U-Nets do not mix."
            )
        text_encoder, tokenizer = load_text_components(model_name)
        # 2. The model, seeded.
        first = self.train_set[0]
        # Sorted names: the model concatenates maps in this order, and a checkpoint restores it from JSON.
        self.feature_shapes: dict[str, tuple[int, int, int]] = {
            k: (int(v.shape[0]), int(v.shape[1]), int(v.shape[2])) for k, v in sorted(first.features.items())
        }
        val_shapes = {k: tuple(int(n) for n in v.shape) for k, v in sorted(self.val_set[0].features.items())}
        if val_shapes != self.feature_shapes:
            differ = sorted(set(val_shapes) ^ set(self.feature_shapes)) or [
                k for k in val_shapes if val_shapes[k] != self.feature_shapes[k]
            ]
            raise ValueError(
                f"Val set {config.val!r} stores other features than train set {config.train!r} (first difference: "
                f"{differ[0]} {val_shapes.get(differ[0])} vs {self.feature_shapes.get(differ[0])}); generate both "
                f"with the same feature_blocks, feature_steps and feature_layout."
            )
        self.image_size = int(first.image.shape[0])
        # The reference's level widths fit SD's four resolutions; other U-Nets get as many as they have.
        levels = {"level_channels": default_level_channels(self.feature_shapes)}
        presence = {"presence_head": config.negative_fraction > 0}
        model_fields = {"mask_size": self.image_size, **levels, **presence, **config.model, "dropout": config.dropout}
        self.model_config = GroundingModelConfig.from_dict(model_fields)
        self.embedder = ClassEmbedder(
            text_encoder,
            tokenizer,
            config.template,
            end_of_text=config.end_of_text,
            subtract_others=config.subtract_others,
            **query_options(self.model_config.class_queries),
        )
        seed_everything(config.seed)
        self.model: GroundingModel = build_grounding_model(self.model_config, self.feature_shapes, self.embedder.width)
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
        # With several processes, gradients are averaged by DDP; evaluation and checkpoints stay on rank 0.
        self.forward_model: torch.nn.Module = AnswerView(self.model)
        if self.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = torch.nn.parallel.DistributedDataParallel(self.forward_model, device_ids=device_ids)
        torch.manual_seed(config.seed + self.rank)  # dropout differs per rank, weights start equal
        self.negative_pool = training_classes(config.train) if config.negative_fraction else ()

    def meta(self, epoch: int, val: dict[str, Any]) -> CheckpointMeta:
        return CheckpointMeta(
            model_config=self.model_config.to_dict(),
            feature_shapes=dict(self.feature_shapes),
            text_width=self.embedder.width,
            text_model=set_model_name(self.config.train),
            set_config=read_set_config(Path(self.config.train)),
            template=self.config.template,
            end_of_text=self.config.end_of_text,
            subtract_others=self.config.subtract_others,
            train_config=dataclasses.asdict(self.config),
            threads=torch.get_num_threads(),
            epoch=epoch,
            val=val,
        )

    def run(self, *, resume: bool) -> TrainReport:
        config = self.config
        start_epoch, best, history = 0, -1.0, []
        if resume:
            last = self.out / LAST
            self.model.load_state_dict(load_weights(last))
            state = restore_training_state(last, self.optimizer)
            start_epoch, best, history = state["epoch"], state["best_val_miou"], state["history"]
            log.info("resuming %s at epoch %d", self.out, start_epoch)
        for epoch in range(start_epoch, config.epochs):
            row = self.train_epoch(epoch)
            val = evaluate_dataset(self.model, self.val_set, self.embedder, batch_size=max(config.batch_size, 4))
            row.update(epoch=epoch + 1, val_miou=val["miou"], val_miou_per_image=val["miou_per_image"])
            history.append(row)
            improved = val["miou"] > best
            best = max(best, val["miou"])
            if self.rank == 0:
                if improved:
                    save_checkpoint(self.out / BEST, self.model, self.meta(epoch + 1, val))
                training = {"epoch": epoch + 1, "best_val_miou": best, "history": history}
                save_checkpoint(self.out / LAST, self.model, self.meta(epoch + 1, val), self.optimizer, training)
                write_history(self.out, history)
            if self.world > 1:
                torch.distributed.barrier()
            log.info("epoch %d: loss %.4f, val mIoU %.2f", epoch + 1, row["train_loss"], val["miou"])
        if self.rank == 0 and self.model.presence_head is not None:
            self.tune_answers()
        best_row = max(history, key=lambda r: r["val_miou"])
        total = sum(r["seconds"] for r in history)
        return TrainReport(
            out=self.out,
            best_epoch=int(best_row["epoch"]),
            best_val_miou=best_row["val_miou"],
            samples_per_s=sum(r["samples"] for r in history) / total,
            data_wait_fraction=sum(r["data_wait_s"] for r in history) / total,
            history=history,
        )

    def tune_answers(self) -> None:
        """Choose the best checkpoint's answer rule on the validation set (it trades N-acc against T-acc),
        and record it there; run again on a resumed, finished run, it writes the same rule."""
        model, meta = load_grounding_model(self.out / BEST, device=str(self.device))
        choice = record_answer_rule(
            self.out / BEST, model, meta, self.val_set, self.embedder, self.config.val, rule=self.config.answer_rule
        )
        log.info(
            "answer rule (%s): presence > %.2f, own share >= %.1f, score weights %s (val N-acc %.1f, T-acc %.1f)",
            choice["rule"],
            choice["presence_threshold"],
            choice["min_own_share"],
            choice["answer_weights"],
            choice["n_acc"],
            choice["t_acc"],
        )

    def loader(self, epoch: int) -> DataLoader[GroundingBatch]:
        # A generator seeded by (seed, epoch) makes each epoch's order independent of interruptions.
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        sampler: Any = RandomSampler(self.train_set, generator=generator)
        if self.world > 1:
            sampler = DistributedSampler(self.train_set, self.world, self.rank, seed=self.config.seed)
            sampler.set_epoch(epoch)
        return DataLoader(
            self.train_set,  # type: ignore[arg-type]
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=partial(
                collate,
                embedder=self.embedder,
                mask_size=self.model_config.mask_size,
                negatives=self.negatives(epoch),
                word_targets=self.config.word_loss > 0,
            ),
            num_workers=self.config.num_workers,
        )

    def negatives(self, epoch: int) -> NegativeQueries | None:
        if not self.config.negative_fraction:
            return None
        config = self.config
        return NegativeQueries(
            self.negative_pool,
            config.negative_fraction,
            config.seed,
            epoch,
            hard=config.hard_negatives,
            count=config.negatives_per_sample,
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        losses, word_terms, samples, waiting = [], [], 0, 0.0
        start = time.perf_counter()
        bar = tqdm(
            total=len(self.train_set) // self.world,
            desc=f"epoch {epoch + 1}",
            unit="sample",
            disable=not self.config.progress or self.rank != 0,
        )
        batches = iter(self.loader(epoch))
        while True:
            fetch = time.perf_counter()
            batch = next(batches, None)
            waiting += time.perf_counter() - fetch
            if batch is None:
                break
            batch = batch.to(self.device)
            if self.config.mine_negatives:
                batch = mine_negatives(self.model, batch, self.embedder, self.negative_pool)
            # Mixed precision on CUDA (bf16 where supported); CPU runs in float32.
            with torch.autocast("cuda", dtype=amp_dtype(), enabled=self.device.type == "cuda"):
                output = self.forward_model(batch.features, batch.embeddings, ~batch.valid)
            loss = grounding_loss(self.config.loss, output["logits"].float(), batch.targets, batch.valid, batch.present)
            if "presence" in output:
                loss = loss + presence_loss(output["presence"], batch.present, batch.valid)
            if batch.word_targets is not None:
                token_valid = batch.valid[:, :, None] & ~padded_tokens(batch.embeddings)  # (B, N, K)
                words = word_loss(self.config.loss, output["token_logits"], batch.word_targets, token_valid)
                loss = loss + self.config.word_loss * words
                word_terms.append(words.item())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"Loss became {loss.item()} at epoch {epoch + 1} on samples {batch.indices}; lower the learning "
                    f"rate or check those samples' features for NaN. The last good checkpoint is in {self.out}."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            samples += len(batch.indices)
            bar.update(len(batch.indices))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        bar.close()
        seconds = time.perf_counter() - start
        row = {"train_loss": float(np.mean(losses)), "samples": samples, "seconds": seconds, "data_wait_s": waiting}
        if word_terms:  # the word targets' own loss (unweighted), so that a run shows it was trained with them
            row["word_loss"] = float(np.mean(word_terms))
        return row


def training_classes(folder: str) -> tuple[str, ...]:
    """The classes a training set holds samples of (its manifest's counts), sorted. Negative queries are
    drawn from them, so that training never names an unseen class."""
    kept = read_manifest(Path(folder)).get("per_class", {})
    classes = tuple(sorted(name for name, counts in kept.items() if counts.get("kept")))
    if len(classes) < 3:
        raise ValueError(
            f"Training set {folder!r} lists {len(classes)} classes with samples in its manifest; negative queries "
            "need at least 3 (two in an image and one absent). Train with --negative-fraction 0, or on a set with "
            "more classes."
        )
    return classes


class AnswerView(torch.nn.Module):
    """The grounding model with `answer` as its forward, returning `GroundingOutput`'s fields as a dict
    ("logits", and "presence" and "token_logits" where the model has them) so that
    DistributedDataParallel, which only wraps `forward`, trains the presence head too."""

    def __init__(self, model: GroundingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> dict[str, torch.Tensor]:
        # A dict without None values: DistributedDataParallel drops None from the outputs it passes on.
        output = self.model.answer(*inputs)
        return {name: value for name, value in vars(output).items() if value is not None}


def write_history(out: Path, history: list[dict[str, float]]) -> None:
    """`history.csv` (one row per epoch) and `curves.png` (loss and validation mIoU)."""
    with open(out / "history.csv", "w", newline="") as handle:
        # Every column any epoch has, first seen first: a run resumed with newer code may log one more.
        columns = list(dict.fromkeys(name for row in history for name in row))
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [r["train_loss"] for r in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.plot(epochs, [r["val_miou"] for r in history], marker="o", label="category-wise")
    right.plot(epochs, [r["val_miou_per_image"] for r in history], marker=".", label="per image (reference)")
    right.set(xlabel="epoch", ylabel="val mIoU", title="validation mIoU")
    right.legend()
    figure.tight_layout()
    temp = out / f"curves.tmp{os.getpid()}.png"
    figure.savefig(temp, dpi=100)
    plt.close(figure)
    os.replace(temp, out / "curves.png")

"""`TrainConfig`: one training run of the grounding model (light to import, for the CLI)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from groundiff.config import REQUIRED, check_types, option
from groundiff.evaluation.config import MIN_T_ACC, check_answer_rule
from groundiff.text import TOKEN_QUERIES
from groundiff.training.losses import LOSSES

# Fields that `--resume` may change: where and how a run executes, not what it computes. `epochs` may
# be raised to train on (the learning rate is constant and each epoch's order depends only on the seed
# and the epoch, so epoch e is the same whatever the planned total), never lowered below the epochs done.
# `threads` is not among them: CPU sums, and so the weights, repeat only for the same thread count.
RESUME_FREE_FIELDS = ("out", "device", "num_workers", "progress", "epochs")


@dataclass
class TrainConfig:
    """One training run. Defaults are the improved method: "{x} and {y}" class tokens,
    BCE + log-cosh Dice, dropout 0.1, Adam lr 1e-4, batch 1, 10 epochs, best checkpoint by val mIoU.

    Attributes:
        train, val, out: set folders and the run folder.
        template: grounding prompt template by name or text (`x_and_y`, `photo_x_and_y`, `photo_x`, `x`).
        end_of_text: use each prompt's end-of-text vector (the Li et al. baseline with `photo_x`).
        subtract_others: feed each class embedding minus the mean of the image's other classes'
            (`text.subtract_other_classes`); recorded in the checkpoint, so inference does the same.
        negative_fraction: the fraction of training samples that also query one class they do not
            contain (target: an empty mask and "absent"); above 0 the model gets a presence head
            (unless `model` sets `presence_head`), so that it answers "not found".
        hard_negatives: the share of those absent classes drawn among the ones that share a word with
            a present class ("red disc" beside a red ring), which teach the masks to read both words.
        mine_negatives: each negative query names the absent class of the pool that the model being
            trained paints most strongly in that image (its mask's peak logit, one pass without
            gradients over every candidate), instead of a draw (`training.mining`): hard negatives found
            by the model, whatever words they share. Which samples get one, and where, are drawn as before.
        negatives_per_sample: absent classes each of those samples queries (more than one asks for
            more absent objects than present ones, against answering by elimination).
        answer_rule: `grid` (a presence threshold and an own share) or `score` (an answer score over
            class-agnostic mask statistics), chosen on `val` at the end of a run with negatives.
        word_loss: weight of a mask loss on each name token's own logits (token queries only): a
            token's target is every object of the image whose name has the token's word, so that the
            tokens of an unseen name still mean their words (`data.batching.collate`); 0 = off.
        loss: `bce`, `dice`, `dice+bce` or `bce+logcosh-dice`.
        model: overrides of `GroundingModelConfig` fields (sizes); dropout is its own field.
        max_train_samples: use only the first samples of the training set (set-size experiments).
    """

    train: str = option("data/train", "training set folder")
    val: str = option("data/val", "validation set folder (the best epoch is chosen on it)")
    out: str = option("runs/grounding", "run folder: best/, last/, history.csv, curves.png")
    epochs: int = option(10, "training epochs")
    batch_size: int = option(1, "images per step")
    lr: float = option(1e-4, "Adam learning rate (constant)")
    beta1: float = option(0.9, "Adam beta1")
    beta2: float = option(0.999, "Adam beta2")
    loss: str = option("bce+logcosh-dice", "bce, dice, dice+bce or bce+logcosh-dice")
    template: str = option("x_and_y", "grounding prompt: x_and_y, photo_x_and_y, photo_x, x or text with {x}")
    end_of_text: bool = option(False, "use each prompt's end-of-text vector (Li et al. baseline, with photo_x)")
    subtract_others: bool = option(
        False, "subtract the mean of the other classes' embeddings from each (against CLIP's bag of words)"
    )
    negative_fraction: float = option(
        0.0, "fraction of samples that also query an absent class (empty target); > 0 adds a presence output"
    )
    hard_negatives: float = option(
        0.0, "share of the absent classes drawn among those sharing a word with a present one (hard negatives)"
    )
    mine_negatives: bool = option(
        False, "each negative is the absent class the model in training paints most in that image (mined negatives)"
    )
    negatives_per_sample: int = option(1, "absent classes queried by each sample that gets negatives")
    answer_rule: str = option(
        "grid", "how a run with negatives chooses its 'not found' rule at the end: grid or score (see tune-answers)"
    )
    word_loss: float = option(
        0.0, "token queries: weight of a mask loss teaching each name token its word's objects (0 = off)"
    )
    dropout: float = option(0.1, "dropout of the fusion decoder")
    model: dict[str, Any] = field(default_factory=dict)
    max_train_samples: int | None = option(None, "use only the first N training samples")
    seed: int = option(0, "seed of initialisation, shuffling and dropout")
    device: str | None = option(None, "cpu, cuda, ... (default: cuda when available)")
    threads: int | None = option(
        None, "torch CPU threads (default: all cores); a run is deterministic for a given seed and thread count"
    )
    num_workers: int = option(0, "DataLoader worker processes")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        check_types(self)
        if self.loss not in LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}.")
        for name in ("epochs", "batch_size", "negatives_per_sample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be at least 0 (0: load in the main process), got {self.num_workers}.")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1 (or unset for all cores), got {self.threads}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        for name in ("negative_fraction", "hard_negatives"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        check_answer_rule(self.answer_rule, "answer_rule")
        if self.word_loss < 0:
            raise ValueError(f"word_loss must be at least 0 (0: off), got {self.word_loss}.")
        if self.word_loss and self.model.get("class_queries") not in TOKEN_QUERIES:
            raise ValueError(
                f"word_loss={self.word_loss} trains each name token's own mask, which only token queries have; "
                "add `class_queries: tokens` (or `words`) under `model:` in the config, or set word_loss to 0."
            )
        if self.hard_negatives and not self.negative_fraction:
            raise ValueError(
                f"hard_negatives={self.hard_negatives} chooses among negative queries, but negative_fraction is 0; "
                "set --negative-fraction too (e.g. 0.5)."
            )

        if self.mine_negatives:
            clashes = {
                "negative_fraction": (self.negative_fraction == 0, "set it above 0 (e.g. 0.5): mining names negatives"),
                "hard_negatives": (self.hard_negatives > 0, "set it to 0: mined negatives replace the word draw"),
                "negatives_per_sample": (self.negatives_per_sample != 1, "set it to 1: mining names one per sample"),
                "word_loss": (self.word_loss > 0, "set it to 0: word targets depend on the drawn names"),
            }
            for name, (clash, fix) in clashes.items():
                if clash:
                    raise ValueError(f"mine_negatives does not combine with {name}={getattr(self, name)}; {fix}.")

    def content(self) -> dict[str, Any]:
        """The fields that decide the trained weights, as JSON values; a resumed run must match them exactly."""
        values = json.loads(json.dumps(dataclasses.asdict(self)))
        return {k: v for k, v in values.items() if k not in RESUME_FREE_FIELDS}


@dataclass
class TuneAnswersConfig:
    """Which checkpoint's answer rule to tune, on what; see `groundiff.training.answer_rule`."""

    checkpoint: str = option(REQUIRED, "a checkpoint folder (runs/.../best); its checkpoint.json is rewritten")
    val: str | None = option(None, "validation set folder (generated or truth); default: the run's --val")
    min_t_acc: float = option(MIN_T_ACC, "the lowest T-acc, in percent, that a rule may have on the validation set")
    rule: str = option(
        "grid",
        "grid: a presence threshold and an own share, from a grid; score: a logistic score over class-agnostic "
        "mask statistics (peak logit, area, own share), fitted with its threshold",
    )
    batch_size: int = option(4, "images per forward pass")

    def __post_init__(self) -> None:
        check_answer_rule(self.rule, "--rule")

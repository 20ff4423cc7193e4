"""`TrainConfig`: one training run of the grounding model (light to import, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from groundiff.losses import LOSSES


@dataclass
class TrainConfig:
    """One training run. Defaults are the improved method: "{x} and {y}" class tokens,
    BCE + log-cosh Dice, dropout 0.1, Adam lr 1e-4, batch 1, 10 epochs, best checkpoint by val mIoU.

    Attributes:
        train, val, out: set folders and the run folder.
        template: grounding prompt template by name or text (`x_and_y`, `photo_x_and_y`, `photo_x`, `x`).
        end_of_text: use each prompt's end-of-text vector (the Li et al. baseline with `photo_x`).
        loss: `bce`, `dice`, `dice+bce` or `bce+logcosh-dice`.
        model: overrides of `GroundingModelConfig` fields (sizes); dropout is its own field.
        max_train_samples: use only the first samples of the training set (set-size experiments).
    """

    train: str = "data/train"
    val: str = "data/val"
    out: str = "runs/grounding"
    epochs: int = 10
    batch_size: int = 1
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    loss: str = "bce+logcosh-dice"
    template: str = "x_and_y"
    end_of_text: bool = False
    dropout: float = 0.1
    model: dict[str, Any] = field(default_factory=dict)
    max_train_samples: int | None = None
    seed: int = 0
    device: str | None = None
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

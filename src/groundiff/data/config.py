"""`GenerateConfig`: everything that defines one generated set (light to import, for the CLI)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from groundiff.capture.config import CaptureConfig, Layout
from groundiff.data.vocabulary import DEFAULT_SET_SIZES, SET_KINDS
from groundiff.dtypes import parse_dtype
from groundiff.text import PROMPT_TEMPLATES, PromptTemplate

CONFIG_FILE = "config.json"
# What a sample keeps of the U-Net: its maps, or the inputs of the captured step(s) from which
# `capture.replay` recomputes the maps (~0.3-0.5 MB instead of 12.6 MB for SD 1.5), or both.
FEATURE_STORAGE = ("maps", "unet-input", "both")
# Fields that change how a set is produced but not what it contains: free to differ on resume.
EXECUTION_FIELDS = ("out", "device", "batch_size", "samples_per_shard", "progress")


@dataclass
class GenerateConfig:
    """Everything that defines one generated set. YAML/TOML files and CLI flags are views of it.

    `auto` for labeler, scorer and vocabulary means the model's own: the mini world's for
    `--model miniworld`, else Mask R-CNN, no scorer and Pascal VOC Split-1. `feature_storage`
    chooses between storing the captured maps and storing the U-Net inputs they are recomputed from;
    `attention_maps` also stores each class's cross-attention heat map (the training-free reference).
    """

    out: str = "data/train"
    set: str = "train"
    model: str = "miniworld"
    labeler: str = "auto"
    scorer: str = "auto"
    vocabulary: str = "auto"
    classes: tuple[str, ...] | None = None
    num_samples: int | None = None
    objects_per_prompt: int = 2
    template: str = PROMPT_TEMPLATES["generation"]
    seed: int = 0
    steps: int = 50
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    dtype: str = "float32"
    device: str | None = None
    feature_blocks: tuple[str, ...] | None = None
    feature_steps: tuple[int, ...] = (-1,)
    feature_layout: str = "cond"
    feature_dtype: str = "float16"
    feature_storage: str = "maps"
    attention_maps: bool = False
    batch_size: int = 1
    samples_per_shard: int = 100
    max_attempts: int = 20
    progress: bool = True

    def __post_init__(self) -> None:
        if self.set not in SET_KINDS:
            raise ValueError(f"Unknown set {self.set!r}; choose one of {', '.join(SET_KINDS)}.")
        if self.num_samples is None:
            self.num_samples = DEFAULT_SET_SIZES[self.set]
        for name in ("num_samples", "steps", "batch_size", "samples_per_shard", "max_attempts", "objects_per_prompt"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        PromptTemplate(self.template)
        parse_dtype(self.feature_dtype)
        if self.feature_storage not in FEATURE_STORAGE:
            raise ValueError(
                f"Unknown feature_storage {self.feature_storage!r}; choose one of {', '.join(FEATURE_STORAGE)}."
            )
        self.classes = tuple(self.classes) if self.classes is not None else None
        self.feature_steps = tuple(self.feature_steps)
        self.feature_blocks = tuple(self.feature_blocks) if self.feature_blocks is not None else None
        own = "miniworld" if self.model == "miniworld" else None
        if self.labeler == "auto":
            self.labeler = own or "maskrcnn"
        if self.scorer == "auto":
            self.scorer = own or "none"
        if self.vocabulary == "auto":
            self.vocabulary = own or "voc-split1"

    def content(self) -> dict[str, Any]:
        """The fields that decide the samples; a resumed set must match them exactly."""
        values = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k not in EXECUTION_FIELDS}

    def capture(self) -> CaptureConfig:
        return CaptureConfig(blocks=self.feature_blocks, steps=self.feature_steps, layout=Layout(self.feature_layout))

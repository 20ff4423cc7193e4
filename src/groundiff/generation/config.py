"""`GenerateConfig`: everything that defines one generated set; `LabelConfig` and `ScoreConfig`: what
relabels and scores one (light to import, for the CLI)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from groundiff.capture.config import CaptureConfig, Layout
from groundiff.config import REQUIRED, check_types, option
from groundiff.data.vocabulary import DEFAULT_SET_SIZES, SET_KINDS
from groundiff.sd.dtypes import parse_dtype
from groundiff.text import PROMPT_TEMPLATES, PromptTemplate
from groundiff.worlds import generation_defaults

# What a sample keeps of the U-Net: its maps, or the inputs of the captured step(s) from which
# `capture.replay` recomputes the maps (~0.3-0.5 MB instead of 12.6 MB for SD 1.5), or both.
FEATURE_STORAGE = ("maps", "unet-input", "both")
# Fields that change how a set is produced but not what it contains: free to differ on resume.
EXECUTION_FIELDS = ("out", "device", "batch_size", "samples_per_shard", "progress")


@dataclass
class GenerateConfig:
    """Everything that defines one generated set. YAML/TOML files and CLI flags are views of it.

    `auto` for labeler, scorer and vocabulary means the model's own (see `groundiff.worlds`): the mini
    world's for `--model miniworld`, else Mask R-CNN, no scorer and Pascal VOC Split-1. Unset steps,
    guidance scale and batch size are the world's too (the mini world: 20 steps, 4.0, 16 images per
    call; any other model: the paper's 50 steps, 7.5, 1). `feature_storage`
    chooses between storing the captured maps and storing the U-Net inputs they are recomputed from;
    `attention_maps` also stores each class's cross-attention heat map (the training-free reference).
    """

    out: str = option("data/train", "the set's folder (shards, config.json, manifest.json)")
    set: str = option("train", "train, val, test-seen, test-mixed or test-unseen")
    model: str = option("miniworld", "world (miniworld), built-in name, hub id, diffusers folder or checkpoint file")
    labeler: str = option("auto", "maskrcnn, maskrcnn-v1, a world's name or none (auto: the model's own)")
    scorer: str = option("auto", "CLIP hub id or folder, a world's name, clipiqa+ or none (auto: the model's own)")
    vocabulary: str = option("auto", "voc-split1, a world's name or a YAML/TOML/JSON file with seen/unseen lists")
    classes: tuple[str, ...] | None = option(None, "comma-separated classes this set draws from (default: all)")
    num_samples: int | None = option(None, "kept samples (default: 10000 for train, 1000 otherwise)")
    objects_per_prompt: int = option(2, "distinct classes per prompt")
    max_objects_per_prompt: int | None = option(
        None, "if set, each prompt names a uniform count in [objects_per_prompt, this] (a mix of object counts)"
    )
    template: str = option(PROMPT_TEMPLATES["generation"], "generation prompt with {x} and {y}")
    seed: int = option(0, "set seed; sample i depends only on (seed, set, i, attempt)")
    steps: int | None = option(None, "denoising steps (default: the world's; 50 for Stable Diffusion)")
    guidance_scale: float | None = option(None, "classifier-free guidance scale (default: the world's; 7.5 for SD)")
    height: int | None = option(None, "image height (default: the model's)")
    width: int | None = option(None, "image width (default: the model's)")
    dtype: str = option("float32", "pipeline dtype: float32, float16 or bfloat16")
    device: str | None = option(None, "cpu, cuda, ... (default: cuda when available)")
    feature_blocks: tuple[str, ...] | None = option(None, "comma-separated U-Net blocks (default: all 9)")
    feature_steps: tuple[int, ...] = option((-1,), "comma-separated denoising step indices; -1 is the last")
    feature_layout: str = option("cond", "cond or uncond+cond")
    feature_dtype: str = option("float16", "dtype of stored maps")
    feature_storage: str = option("maps", "maps, unet-input (recomputed by one U-Net forward) or both")
    attention_maps: bool = option(False, "also store per-class cross-attention heat maps")
    batch_size: int | None = option(None, "images per pipeline call (default: the world's; 1 for SD)")
    samples_per_shard: int = option(100, "samples per tar shard")
    max_attempts: int = option(20, "attempts per sample before the labeler is declared hopeless")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        check_types(self)
        if self.set not in SET_KINDS:
            raise ValueError(f"Unknown set {self.set!r}; choose one of {', '.join(SET_KINDS)}.")
        if self.num_samples is None:
            self.num_samples = DEFAULT_SET_SIZES[self.set]
        own = generation_defaults(self.model)
        self.labeler = own.labeler if self.labeler == "auto" else self.labeler
        self.scorer = own.scorer if self.scorer == "auto" else self.scorer
        self.vocabulary = own.vocabulary if self.vocabulary == "auto" else self.vocabulary
        self.steps = own.steps if self.steps is None else self.steps
        self.guidance_scale = own.guidance_scale if self.guidance_scale is None else self.guidance_scale
        self.batch_size = own.batch_size if self.batch_size is None else self.batch_size
        for name in ("num_samples", "steps", "batch_size", "samples_per_shard", "max_attempts", "objects_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.set == "test-mixed" and self.objects_per_prompt < 2:
            raise ValueError(
                "A test-mixed set names a seen and an unseen class in every prompt; set objects_per_prompt >= 2."
            )
        if self.max_objects_per_prompt is not None and self.max_objects_per_prompt < self.objects_per_prompt:
            raise ValueError(
                f"max_objects_per_prompt ({self.max_objects_per_prompt}) is below objects_per_prompt "
                f"({self.objects_per_prompt}); give a range such as --objects-per-prompt 1 --max-objects-per-prompt 4."
            )
        PromptTemplate(self.template)
        parse_dtype(self.feature_dtype)
        if self.feature_storage not in FEATURE_STORAGE:
            raise ValueError(
                f"Unknown feature_storage {self.feature_storage!r}; choose one of {', '.join(FEATURE_STORAGE)}."
            )

    def content(self) -> dict[str, Any]:
        """The fields that decide the samples; a resumed set must match them exactly."""
        values = dataclasses.asdict(self)
        if values["max_objects_per_prompt"] is None:
            del values["max_objects_per_prompt"]  # sets made before the field existed stay the same sets
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k not in EXECUTION_FIELDS}

    def capture(self) -> CaptureConfig:
        return CaptureConfig(blocks=self.feature_blocks, steps=self.feature_steps, layout=Layout(self.feature_layout))


@dataclass
class LabelConfig:
    """A generated set relabeled with another labeler, into a new set (`groundiff label`)."""

    data: str = option(REQUIRED, "a complete set folder")
    labeler: str = option(REQUIRED, "maskrcnn, maskrcnn-v1 or miniworld")
    out: str = option(REQUIRED, "folder of the relabeled set")


@dataclass
class ScoreConfig:
    """CLIP-IQA quality scores of every image of one or more sets (`groundiff score`)."""

    data: tuple[str, ...] = option(REQUIRED, "set folders; scores go to DIR/scores.json", many=True)
    scorer: str = option("miniworld", "miniworld, a CLIP hub id or folder, or clipiqa+")

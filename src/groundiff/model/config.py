"""Sizes of the grounding model: one validated dataclass, saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from groundiff.text import TOKEN_QUERIES

PRESENCE_INPUTS = ("statistics", "region")  # what a presence output may read (`model.presence.PresenceHead`)
CLASS_QUERIES = ("mean", *TOKEN_QUERIES)  # how a class name becomes decoder queries (`model.grounding.GroundingModel`)
# What the answer score of `model.answers` reads of each query's mask: class-agnostic, so that a class
# the model never saw is judged like a seen one (a presence output reads the class's mask embedding).
ANSWER_FEATURES = ("peak_logit", "log_area", "own_share", "soft_own_share")


@dataclass(frozen=True)
class GroundingModelConfig:
    """Every size of the grounding model; the defaults are the reference layout (≈17.6 M parameters
    for SD 1.5 at 512²: 16/32/64/128 reduced channels, 240-channel 64² finest map, 256 tokens of width 512).

    The feature layout (which U-Net maps, their shapes) and the text width are not config values:
    `build_grounding_model` reads them from the data and records them on the model.
    """

    level_channels: tuple[int, ...] = field(
        default=(16, 32, 64, 128),
        metadata={"help": "1x1-conv output channels per resolution level, coarse to fine; one per level"},
    )
    patch_size: int = field(default=4, metadata={"help": "side of the square patches cut into visual tokens"})
    width: int = field(default=512, metadata={"help": "model width of the fusion decoder (tokens and queries)"})
    heads: int = field(default=8, metadata={"help": "attention heads; must divide width"})
    decoder_layers: int = field(default=3, metadata={"help": "pre-norm transformer decoder layers"})
    ffn_width: int = field(default=2048, metadata={"help": "hidden width of each decoder feed-forward block"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the decoder, in [0, 1)"})
    mlp_layers: int = field(default=3, metadata={"help": "linear layers of the MLP that gives mask embeddings"})
    mask_size: int | None = field(
        default=None, metadata={"help": "side of the output logit maps; None = the image size given to the builder"}
    )
    spectral_norm: bool = field(default=True, metadata={"help": "spectral norm on the 3x3 convs (as the reference)"})
    norm_groups: int = field(
        default=8, metadata={"help": "GroupNorm groups in the fusion blocks (gcd with the channels is used)"}
    )
    presence_head: bool = field(
        default=False,
        metadata={"help": "add a per-query presence output, so an absent object is answered 'not found'"},
    )
    presence_inputs: str = field(
        default="statistics",
        metadata={
            "help": "what the presence output reads: statistics (mask embedding, logit peak, mean, area) or "
            "region (also the features under the mask and the mask's shape)"
        },
    )
    class_queries: str = field(
        default="mean",
        metadata={
            "help": "mean: one decoder query per class, the mean of its name's tokens (the paper); tokens: one "
            "query per token, and a class's mask is the pixels that every one of its tokens' masks claims; words: "
            "as tokens, but each word of the name is encoded alone, so a word is the same query in every name"
        },
    )

    presence_threshold: float = field(
        default=0.5,
        metadata={"help": "an object is found only where its presence probability exceeds this (models with one)"},
    )
    min_own_share: float = field(
        default=0.0,
        metadata={
            "help": "an object is found only where at least this share of its mask is its own (no other object "
            "asked with it is more probable there); 0 = off. `groundiff tune-answers` picks it on validation"
        },
    )
    answer_weights: tuple[float, ...] | None = field(
        default=None,
        metadata={
            "help": "an object is found only where its answer score (weights of ANSWER_FEATURES, then a bias) is "
            "above 0; None = off. `groundiff tune-answers --rule score` fits it on validation"
        },
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_channels", tuple(int(c) for c in self.level_channels))
        if not self.level_channels or min(self.level_channels) < 1:
            raise ValueError(
                f"GroundingModelConfig.level_channels={self.level_channels} must hold one positive channel count "
                "per resolution level, coarse to fine, e.g. (16, 32, 64, 128)."
            )
        for name in ("patch_size", "width", "heads", "decoder_layers", "ffn_width", "mlp_layers", "norm_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GroundingModelConfig.{name}={value!r} must be a positive integer.")
        if self.width % self.heads:
            raise ValueError(
                f"GroundingModelConfig.width={self.width} is not divisible by heads={self.heads}; "
                "choose a width that is a multiple of the head count."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GroundingModelConfig.dropout={self.dropout} must be in [0, 1), e.g. 0.1.")
        if self.presence_inputs not in PRESENCE_INPUTS:
            raise ValueError(
                f"GroundingModelConfig.presence_inputs={self.presence_inputs!r} must be one of "
                f"{', '.join(PRESENCE_INPUTS)}."
            )
        if self.class_queries not in CLASS_QUERIES:
            raise ValueError(
                f"GroundingModelConfig.class_queries={self.class_queries!r} must be one of {', '.join(CLASS_QUERIES)}."
            )
        for name in ("presence_threshold", "min_own_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"GroundingModelConfig.{name}={getattr(self, name)} must be in [0, 1], e.g. 0.5.")
        if self.answer_weights is not None:
            object.__setattr__(self, "answer_weights", tuple(float(w) for w in self.answer_weights))
            if len(self.answer_weights) != len(ANSWER_FEATURES) + 1:
                raise ValueError(
                    f"GroundingModelConfig.answer_weights has {len(self.answer_weights)} values; it needs one per "
                    f"answer feature ({', '.join(ANSWER_FEATURES)}) and a bias, {len(ANSWER_FEATURES) + 1} in all, "
                    "or None for no answer score."
                )
        if self.mask_size is not None and self.mask_size < 1:
            raise ValueError(
                f"GroundingModelConfig.mask_size={self.mask_size} must be positive, or None for the image size."
            )

    @property
    def token_queries(self) -> bool:
        """Whether the model takes one decoder query per name token, (B, N, K, D) inputs."""
        return self.class_queries in TOKEN_QUERIES

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable field → value mapping (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroundingModelConfig:
        """Inverse of `to_dict`; unknown keys are an error that lists the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"Unknown GroundingModelConfig field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}."
            )
        return cls(**data)


# Named overrides of the reference sizes. `slim` is the shipped mini-world checkpoint's decoder
# (src/groundiff/configs/models/miniworld-grounding.yaml): a quarter of the width, a sixth of the
# parameters, 4.9 MB in float16, about twice as fast to train on CPU.
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "reference": {},
    "slim": {"width": 128, "ffn_width": 512, "heads": 4},
}

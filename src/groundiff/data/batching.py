"""From stored samples to model inputs: class embeddings (cached, frozen text encoder) and padded batches.

Legend: B images, N classes (padded to the batch's largest count), D text width, C channels, H×W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from groundiff.data.records import SampleRecord
from groundiff.text import PromptTemplate, subtract_other_classes, template_class_embeddings


class ClassEmbedder:
    """Class embeddings of one image's classes under a grounding template, from a frozen CLIP text encoder.

    With a two-slot template ("{x} and {y}") a class's embedding depends on the other classes of
    the prompt, so results are cached per ordered tuple of classes; the encoder runs once per tuple.
    """

    def __init__(
        self,
        text_encoder: Any,
        tokenizer: Any,
        template: str,
        *,
        end_of_text: bool = False,
        subtract_others: bool = False,
    ) -> None:
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.template = PromptTemplate.named(template)
        self.end_of_text = end_of_text
        self.subtract_others = subtract_others
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    @classmethod
    def for_checkpoint(cls, meta: Any, text_encoder: Any, tokenizer: Any) -> ClassEmbedder:
        """The embedder a checkpoint was trained with: `meta` is its `CheckpointMeta` (template, end-of-text,
        subtraction), so evaluation and inference embed class names exactly as training did."""
        return cls(
            text_encoder,
            tokenizer,
            meta.template,
            end_of_text=meta.end_of_text,
            subtract_others=meta.subtract_others,
        )

    @property
    def width(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    def __call__(self, classes: Sequence[str]) -> torch.Tensor:
        """(N, D) float32 on the CPU."""
        key = tuple(classes)
        if key not in self._cache:
            embeddings = template_class_embeddings(
                self.text_encoder, self.tokenizer, self.template, key, end_of_text=self.end_of_text
            )
            if self.subtract_others:
                embeddings = subtract_other_classes(embeddings)
            self._cache[key] = embeddings.float().cpu()
        return self._cache[key]


@dataclass
class GroundingBatch:
    """Model inputs and targets of B samples.

    Attributes:
        features: flat map name → (B, C, h, w) float32.
        embeddings: (B, N, D) class embeddings, zero where padded.
        valid: (B, N) bool, False for padding.
        targets: (B, N, H, W) float in {0, 1}; empty (B, 0, ...) when the samples have no masks.
        classes: per image, its class names.
        indices: per image, its sample index.
    """

    features: dict[str, torch.Tensor]
    embeddings: torch.Tensor
    valid: torch.Tensor
    targets: torch.Tensor
    classes: list[list[str]]
    indices: list[int]

    def to(self, device: torch.device | str) -> GroundingBatch:
        return GroundingBatch(
            features={k: v.to(device, non_blocking=True) for k, v in self.features.items()},
            embeddings=self.embeddings.to(device),
            valid=self.valid.to(device),
            targets=self.targets.to(device, non_blocking=True),
            classes=self.classes,
            indices=self.indices,
        )


def collate(records: Sequence[SampleRecord], embedder: ClassEmbedder, mask_size: int | None = None) -> GroundingBatch:
    """Stack B records, padding classes to the largest count; masks resized to `mask_size` if given."""
    count = max(len(r.classes) for r in records)
    width = embedder.width
    embeddings = torch.zeros(len(records), count, width)  # (B, N, D)
    valid = torch.zeros(len(records), count, dtype=torch.bool)  # (B, N)
    height, side = records[0].image.shape[:2]
    size = (mask_size, mask_size) if mask_size else (height, side)
    targets = torch.zeros(len(records), count, *size)  # (B, N, H, W)
    for b, record in enumerate(records):
        n = len(record.classes)
        embeddings[b, :n] = embedder(record.classes)
        valid[b, :n] = True
        if record.masks:
            masks = torch.from_numpy(np.stack(record.masks)).float()[None]  # (1, n, H, W)
            targets[b, :n] = (
                F.interpolate(masks, size=size, mode="nearest")[0] if masks.shape[-2:] != size else masks[0]
            )
    names = records[0].features.keys()
    features = {name: torch.stack([r.features[name] for r in records]).float() for name in names}  # (B, C, h, w)
    return GroundingBatch(
        features, embeddings, valid, targets, [r.classes for r in records], [r.index for r in records]
    )

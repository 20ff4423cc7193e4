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
from groundiff.text import (
    TOKEN_QUERIES,
    PromptTemplate,
    class_token_embeddings,
    name_token_words,
    padded_tokens,
    subtract_other_classes,
    template_class_embeddings,
    word_token_embeddings,
)


class ClassEmbedder:
    """Class embeddings of one image's classes under a grounding template, from a frozen CLIP text encoder.

    With a two-slot template ("{x} and {y}") a class's embedding depends on the other classes of
    the prompt, so results are cached per ordered tuple of classes; the encoder runs once per tuple.
    With `tokens=True` each class keeps its name's tokens apart, (N, K, D) zero-padded, for a model
    with token queries (`GroundingModelConfig.class_queries`); otherwise their mean, (N, D). With
    `words_alone` too, each word of a name is encoded alone (no template, no other class), so that a
    word is the same vector in every name it is part of.
    """

    def __init__(
        self,
        text_encoder: Any,
        tokenizer: Any,
        template: str,
        *,
        end_of_text: bool = False,
        subtract_others: bool = False,
        tokens: bool = False,
        words_alone: bool = False,
    ) -> None:
        if tokens and end_of_text:
            raise ValueError(
                "Token queries read each class name's tokens; the end-of-text embedding has one vector per "
                "prompt. Use end_of_text=False or class_queries='mean'."
            )
        if words_alone and not tokens:
            raise ValueError("words_alone encodes each word of a name for token queries; it needs tokens=True.")
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.template = PromptTemplate.named(template)
        self.end_of_text = end_of_text
        self.subtract_others = subtract_others
        self.tokens = tokens
        self.words_alone = words_alone
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}
        self._words: dict[str, list[str]] = {}  # name → its tokens' words; collate asks on every step
        self._word_vectors: dict[str, torch.Tensor] = {}  # words_alone: word → its vectors, shared by tuples

    @classmethod
    def for_checkpoint(cls, meta: Any, text_encoder: Any, tokenizer: Any) -> ClassEmbedder:
        """The embedder a checkpoint was trained with: `meta` is its `CheckpointMeta` (template, end-of-text,
        subtraction, token queries), so evaluation and inference embed class names exactly as training did."""
        return cls(
            text_encoder,
            tokenizer,
            meta.template,
            end_of_text=meta.end_of_text,
            subtract_others=meta.subtract_others,
            **query_options(meta.model_config.get("class_queries", "mean")),
        )

    @property
    def width(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    def __call__(self, classes: Sequence[str]) -> torch.Tensor:
        """(N, D) float32 on the CPU, or (N, K, D) with `tokens`."""
        key = tuple(classes)
        if key not in self._cache:
            if self.tokens:
                if self.words_alone:
                    embeddings = word_token_embeddings(self.text_encoder, self.tokenizer, key, self._word_vectors)
                else:
                    embeddings = class_token_embeddings(self.text_encoder, self.tokenizer, self.template, key)
                if self.subtract_others:
                    embeddings = _subtract_other_classes_from_tokens(embeddings)
            else:
                embeddings = template_class_embeddings(
                    self.text_encoder, self.tokenizer, self.template, key, end_of_text=self.end_of_text
                )
                if self.subtract_others:
                    embeddings = subtract_other_classes(embeddings)
            self._cache[key] = embeddings.float().cpu()
        return self._cache[key]

    def token_words(self, classes: Sequence[str]) -> list[list[str]]:
        """Per class, the word of its name that each of its tokens (the K slots of `__call__`) belongs to."""
        for name in classes:
            if name not in self._words:
                self._words[name] = name_token_words(self.tokenizer, name)
        return [self._words[name] for name in classes]


def query_options(class_queries: str) -> dict[str, bool]:
    """The `ClassEmbedder` flags (`tokens`, `words_alone`) for a `GroundingModelConfig.class_queries` kind."""
    return {"tokens": class_queries in TOKEN_QUERIES, "words_alone": class_queries == "words"}


def _subtract_other_classes_from_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """(N, K, D) zero-padded tokens, each minus the mean of the other classes' mean embeddings (the
    same offset `subtract_other_classes` takes from a class's mean); padding stays zero."""
    valid = ~padded_tokens(tokens)[:, :, None]  # (N, K, 1)
    means = tokens.sum(dim=1) / valid.sum(dim=1)  # (N, D)
    others = means - subtract_other_classes(means)  # (N, D)
    return (tokens - others[:, None]) * valid


@dataclass(frozen=True)
class NegativeQueries:
    """Absent-object queries for training and for measuring "not found" answers.

    With probability `fraction`, a sample's queries gain `count` classes of `pool` that the sample does
    not contain (their targets are empty masks and "absent"), each inserted at a random position so
    that the position says nothing. With probability `hard`, each is drawn among the absent ones that
    share a word with a present one ("red disc" beside a red ring): a random draw is mostly an easy
    negative, and a model trained on those still paints the red ring when asked for the red disc.
    More than one per sample asks for more absent objects than present ones, against answering by
    elimination (each query takes an object the other queries did not); measured on the mini world
    it did not help (docs/RESULTS.md, "Three more tries").
    Draws depend only on (seed, epoch, sample index): a resumed run and a DataLoader worker draw the
    same queries.
    """

    pool: tuple[str, ...]
    fraction: float
    seed: int = 0
    epoch: int = 0
    hard: float = 0.0
    count: int = 1

    def __post_init__(self) -> None:
        for name in ("fraction", "hard"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"NegativeQueries.{name} is a probability in [0, 1], got {getattr(self, name)}.")
        if self.count < 1:
            raise ValueError(
                f"NegativeQueries.count is the absent classes per negative sample, at least 1, got {self.count}."
            )

    def __call__(self, index: int, classes: Sequence[str]) -> list[str]:
        """The queries of sample `index`: its `classes`, perhaps with `count` absent classes inserted
        (fewer when the pool runs out)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        queries = list(classes)
        if rng.random() >= self.fraction:
            return queries
        # One draw order for every count, so that count=1 repeats the runs made before it existed.
        for _ in range(self.count):
            absent = [name for name in self.pool if name not in queries]
            if not absent:
                break
            position = int(rng.integers(len(queries) + 1))
            # Drawn only when asked for, so that `hard=0` repeats the draws of runs made before it existed.
            if self.hard and rng.random() < self.hard:
                absent = [name for name in absent if shares_word(name, classes)] or absent
            queries.insert(position, absent[int(rng.integers(len(absent)))])
        return queries


def shares_word(name: str, others: Sequence[str]) -> bool:
    """Whether class `name` has a word in common with one of `others` ("red disc", ["red ring"] → True)."""
    words = set(name.split())
    return any(words & set(other.split()) for other in others if other != name)


@dataclass
class GroundingBatch:
    """Model inputs and targets of B samples.

    Attributes:
        features: flat map name → (B, C, h, w) float32.
        embeddings: (B, N, D) class embeddings, or (B, N, K, D) class tokens, zero where padded.
        valid: (B, N) bool, False for padding.
        present: (B, N) bool, True for queries of objects in the image (False for negatives and padding).
        targets: (B, N, H, W) float in {0, 1}, empty masks for negatives; all zero when the samples have no masks.
        classes: per image, its queried class names.
        indices: per image, its sample index.
        word_targets: for token queries with word targets, (B, N, K, H, W) float in {0, 1}: the target
            of each name token, every object of the image whose name has the token's word ("red" of a
            queried "red ring": every red object); zero for padding. None otherwise.
    """

    features: dict[str, torch.Tensor]
    embeddings: torch.Tensor
    valid: torch.Tensor
    present: torch.Tensor
    targets: torch.Tensor
    classes: list[list[str]]
    indices: list[int]
    word_targets: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> GroundingBatch:
        return GroundingBatch(
            features={k: v.to(device, non_blocking=True) for k, v in self.features.items()},
            embeddings=self.embeddings.to(device),
            valid=self.valid.to(device),
            present=self.present.to(device),
            targets=self.targets.to(device, non_blocking=True),
            classes=self.classes,
            indices=self.indices,
            word_targets=None if self.word_targets is None else self.word_targets.to(device, non_blocking=True),
        )


def collate(
    records: Sequence[SampleRecord],
    embedder: ClassEmbedder,
    mask_size: int | None = None,
    negatives: NegativeQueries | None = None,
    word_targets: bool = False,
) -> GroundingBatch:
    """Stack B records, padding queries to the largest count; masks resized to `mask_size` if given.
    With `negatives`, some records' queries gain a class they do not contain (empty target, not present).
    With `word_targets` (token queries only), the batch also holds each name token's target."""
    if word_targets and not embedder.tokens:
        raise ValueError("Word targets are the targets of name tokens; they need an embedder with tokens=True.")
    queries = [negatives(r.index, r.classes) if negatives else list(r.classes) for r in records]
    count = max(len(names) for names in queries)
    embeddings = stack_embeddings([embedder(names) for names in queries])  # (B, N, D) or (B, N, K, D)
    valid = torch.zeros(len(records), count, dtype=torch.bool)  # (B, N)
    present = torch.zeros(len(records), count, dtype=torch.bool)  # (B, N)
    height, side = records[0].image.shape[:2]
    size = (mask_size, mask_size) if mask_size else (height, side)
    targets = torch.zeros(len(records), count, *size)  # (B, N, H, W)
    for b, (record, names) in enumerate(zip(records, queries, strict=True)):
        valid[b, : len(names)] = True
        present[b, : len(names)] = torch.tensor([name in record.classes for name in names])
        if record.masks:
            masks = torch.from_numpy(np.stack(record.masks)).float()[None]  # (1, n, H, W)
            if masks.shape[-2:] != size:
                masks = F.interpolate(masks, size=size, mode="nearest")
            for slot, name in enumerate(names):
                if name in record.classes:
                    targets[b, slot] = masks[0, record.classes.index(name)]
    features = {
        name: torch.stack([r.features[name] for r in records]).float() for name in records[0].features
    }  # (B, C, h, w)
    words = _word_targets(embedder, queries, present, targets, embeddings.shape[2]) if word_targets else None
    return GroundingBatch(features, embeddings, valid, present, targets, queries, [r.index for r in records], words)


def stack_embeddings(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """`ClassEmbedder` outputs of B query lists, (n, D) or (n, K, D) each, as one (B, N, D) or (B, N, K, D)
    tensor, zero-padded to the most classes (and tokens)."""
    longest = [max(int(row.shape[dim]) for row in rows) for dim in range(rows[0].dim())]
    embeddings = torch.zeros(len(rows), *longest)
    for b, row in enumerate(rows):
        # (n, D): the second slice takes all of D; (n, K, D): the first K token slots
        embeddings[b, : row.shape[0], : row.shape[1]] = row
    return embeddings


def _word_targets(
    embedder: ClassEmbedder, queries: list[list[str]], present: torch.Tensor, targets: torch.Tensor, length: int
) -> torch.Tensor:
    """(B, N, K, H, W): each name token's target, the union of the image's present objects whose names
    have the token's word. Why: a token query is otherwise taught only through its class's mask, the
    least of its tokens', and "blue" of "blue cross" may paint a red ring as long as "cross" does
    not; told what each word covers, tokens of a name the model never saw still mean their words."""
    token_targets = torch.zeros(*targets.shape[:2], length, *targets.shape[2:])  # (B, N, K, H, W)
    for b, names in enumerate(queries):
        found = [(set(name.lower().split()), targets[b, slot]) for slot, name in enumerate(names) if present[b, slot]]
        for slot, token_words in enumerate(embedder.token_words(names)):
            for k, word in enumerate(token_words):
                for name_words, mask in found:
                    if word in name_words:
                        token_targets[b, slot, k] = torch.maximum(token_targets[b, slot, k], mask)
    return token_targets

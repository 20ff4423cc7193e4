"""The grounding model: U-Net feature maps + class embeddings → one mask logit map per class.

Legend for shape comments: B batch, N classes, C channels, D text width, h×w map side, S mask side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from groundiff.model.answers import answer_rule, found_queries
from groundiff.model.config import GroundingModelConfig
from groundiff.model.fusion import FusionDecoder
from groundiff.model.presence import PresenceHead
from groundiff.model.visual_encoder import VisualEncoder
from groundiff.text import padded_tokens

FeatureShapes = dict[str, tuple[int, int, int]]


@dataclass
class GroundingOutput:
    """What the model answers for B images and N queries.

    Attributes:
        logits: (B, N, S, S) mask logits; predicted masks are `sigmoid(logits) > 0.5`.
        presence: (B, N) presence logits, or None for a model without a presence head, whose answer
            to an absent object is whatever mask it paints. `GroundingModel.found` gives the answer.
        token_logits: for a model with token queries, (B, N, K, h, w) each name token's logits at the
            mask features' side (a class's are their minimum, upsampled); padded tokens repeat the first.
    """

    logits: torch.Tensor
    presence: torch.Tensor | None
    token_logits: torch.Tensor | None = None


def describe_layout(feature_shapes: Mapping[str, tuple[int, ...]], text_width: int | None = None) -> str:
    """One-line description of a feature layout, e.g. `{step49.up3: 320x64x64, …}, text width 768`."""
    maps = ", ".join(f"{name}: {'x'.join(str(s) for s in shape)}" for name, shape in feature_shapes.items())
    return "{" + maps + "}" + ("" if text_width is None else f", text width {text_width}")


class GroundingModel(nn.Module):
    """Visual encoder + fusion decoder; mask logits are the dot products of each class's mask
    embedding with the mask features at every pixel.

    The model records the feature layout (map names and (C, h, w) shapes) and the text width it was
    built for; any other input is a `ValueError` naming both layouts. Build it with
    `groundiff.model.build_grounding_model`.
    """

    def __init__(
        self,
        *,
        config: GroundingModelConfig,
        feature_shapes: FeatureShapes,
        levels: Sequence[Sequence[str]],
        text_width: int,
        visual_encoder: VisualEncoder,
        fusion_decoder: FusionDecoder,
        presence_head: PresenceHead | None = None,
    ) -> None:
        """
        Args:
            config: sizes; `config.mask_size` must be set (the builder resolves it).
            feature_shapes: map name → (C, h, w), the layout the model accepts.
            levels: map names per resolution level, coarse to fine; maps are concatenated in this order.
            text_width: width D of the class embeddings.
            presence_head: answers whether each queried object is present; None = no such output.
        """
        super().__init__()
        assert config.mask_size is not None
        self.config = config
        self.feature_shapes: FeatureShapes = dict(feature_shapes)
        self.levels = [list(level) for level in levels]
        self.text_width = text_width
        self.visual_encoder = visual_encoder
        self.fusion_decoder = fusion_decoder
        self.presence_head = presence_head

    def check_compatible(self, feature_shapes: Mapping[str, tuple[int, ...]], text_width: int) -> None:
        """Raise `ValueError` unless `feature_shapes` (name → (C, h, w)) and `text_width` are this model's."""
        given = {name: tuple(int(s) for s in shape) for name, shape in feature_shapes.items()}
        if given != self.feature_shapes or text_width != self.text_width:
            raise ValueError(
                "Inputs do not match the grounding model's layout. "
                f"Model expects {describe_layout(self.feature_shapes, self.text_width)}; "
                f"got {describe_layout(given, text_width)}. "
                "Use a checkpoint trained on features captured with the same model, blocks, steps and image "
                "size and the same text encoder, or train a new one on this data."
            )

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        class_embeddings: torch.Tensor,
        class_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N, S, S) mask logits; see `answer`, which also gives the presence logits."""
        return self.answer(features, class_embeddings, class_padding).logits

    def found(self, output: GroundingOutput, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) bool: which queries of `output` the model answers "found" under its config's rule
        (`model.answers.found_queries`); `valid` (B, N) is False for padding slots, None = none."""
        if valid is None:
            valid = torch.ones(output.logits.shape[:2], dtype=torch.bool, device=output.logits.device)
        return found_queries(output.logits, output.presence, valid, **answer_rule(self.config))

    def answer(
        self,
        features: Mapping[str, torch.Tensor],
        class_embeddings: torch.Tensor,
        class_padding: torch.Tensor | None = None,
    ) -> GroundingOutput:
        """
        Args:
            features: map name → (B, C, h, w) U-Net maps (any float dtype; cast to the model's).
            class_embeddings: (B, N, D) float class embeddings, or (B, N, K, D) class tokens (zero rows
                for padded tokens) for a model with token queries (`class_queries` "tokens" or "words").
            class_padding: (B, N) bool, True for padding slots (images with fewer classes); None = none.
        Returns:
            (B, N, S, S) mask logits with S = config.mask_size, in the model's dtype (predicted masks
            are `sigmoid(logits) > 0.5`), and (B, N) presence logits if the model has a presence head.
            Outputs of padded slots are unspecified.
        """
        # 1. Check the inputs against the recorded layout
        tokens_wanted = self.config.token_queries
        if class_embeddings.dim() != (4 if tokens_wanted else 3):
            wanted = "(B, N, K, D) class tokens" if tokens_wanted else "(B, N, D) class embeddings"
            raise ValueError(
                f"This model (class_queries={self.config.class_queries!r}) takes {wanted}; got shape "
                f"{tuple(class_embeddings.shape)}. Embed names with ClassEmbedder.for_checkpoint(meta, ...)."
            )
        self.check_compatible({name: tuple(t.shape[1:]) for name, t in features.items()}, class_embeddings.shape[-1])
        batch, num_classes = class_embeddings.shape[:2]
        sizes = {name: t.shape[0] for name, t in features.items()}
        if any(size != batch for size in sizes.values()):
            raise ValueError(f"Batch sizes differ: class_embeddings has {batch}, features have {sizes}.")
        if class_padding is not None and (
            class_padding.shape != (batch, num_classes) or class_padding.is_floating_point()
        ):
            raise ValueError(
                f"class_padding must be a (B, N) = ({batch}, {num_classes}) bool tensor; "
                f"got {class_padding.dtype} of shape {tuple(class_padding.shape)}."
            )

        # 2. Visual encoder, then 3. fusion: one mask embedding per class, a dot product at every pixel
        mask_features, tokens = self.encode(features)
        embeddings, logits, token_logits = self.class_logits(mask_features, tokens, class_embeddings, class_padding)

        # 4. Upsample the logits to the mask side. Bilinear upsampling commutes with the per-pixel dot
        #    product, so this equals upsampling the mask features first (as the reference) for N ≪ C maps.
        size = self.config.mask_size
        assert size is not None
        coarse = logits
        if logits.shape[-1] != size:
            logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)  # (B, N, S, S)
        presence = None
        if self.presence_head is not None:
            presence = self.presence_head(embeddings, logits, mask_features, coarse)  # (B, N)
        return GroundingOutput(logits, presence, token_logits)

    def encode(self, features: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The visual encoder alone: (B, C, h, w) mask features and (B, T, W) visual tokens of `features`
        (map name → (B, C, h, w), unchecked; `answer` checks them). Apart from `class_logits` so that many
        query sets can be decoded against one encoding (`training.mining`)."""
        dtype = self.fusion_decoder.to_queries.weight.dtype
        # Maps of each level concatenated along channels, coarse to fine
        levels = [torch.cat([features[name].to(dtype) for name in level], dim=1) for level in self.levels]
        return self.visual_encoder(levels)

    def class_logits(
        self,
        mask_features: torch.Tensor,
        tokens: torch.Tensor,
        class_embeddings: torch.Tensor,
        class_padding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The fusion decoder on an `encode` result: (B, N, C) mask embeddings, (B, N, h, w) class logits at
        the mask features' side and, for token queries, (B, N, K, h, w) each token's (else None)."""
        queries = class_embeddings.to(self.fusion_decoder.to_queries.weight.dtype)
        if self.config.token_queries:
            embeddings, token_logits = self._token_masks(mask_features, queries, tokens, class_padding)
            return embeddings, token_logits.amin(dim=2), token_logits  # where every token of the name is
        embeddings = self.fusion_decoder(queries, tokens, class_padding)  # (B, N, C)
        return embeddings, torch.einsum("bchw,bnc->bnhw", mask_features, embeddings), None

    def _token_masks(
        self,
        mask_features: torch.Tensor,
        class_tokens: torch.Tensor,
        tokens: torch.Tensor,
        class_padding: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token queries: every name token is a query of its own, and a class's logit at a pixel is the
        least of its tokens' (a "red ring" is where "red" and "ring" both are), so that a new pairing of
        known words is found by the words' own masks rather than by one mean embedding the decoder never saw.

        Args:
            mask_features: (B, C, h, w); class_tokens: (B, N, K, D), zero rows for padded tokens;
            tokens: (B, T, W) visual tokens; class_padding: (B, N) bool or None.
        Returns:
            (B, N, C) mask embeddings (the mean over each class's tokens, for the presence output) and
            (B, N, K, h, w) logits of every token.
        """
        batch, count, length = class_tokens.shape[:3]
        token_padding = padded_tokens(class_tokens)  # (B, N, K)
        if class_padding is not None:
            token_padding = token_padding | class_padding[:, :, None]
        flat = self.fusion_decoder(class_tokens.flatten(1, 2), tokens, token_padding.flatten(1))  # (B, N·K, C)
        per_token = flat.view(batch, count, length, -1)  # (B, N, K, C)
        logits = torch.einsum("bchw,bnkc->bnkhw", mask_features, per_token)  # (B, N, K, h, w)
        # A padded token repeats the class's first one, so that it never wins the minimum.
        logits = torch.where(token_padding[..., None, None], logits[:, :, :1], logits)
        weights = (~token_padding).to(per_token.dtype)[..., None]  # (B, N, K, 1)
        embeddings = (per_token * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)  # (B, N, C)
        return embeddings, logits

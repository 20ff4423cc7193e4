"""Assemble a grounding model from a config, the feature layout of the data and the text width."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from groundiff.model.config import GroundingModelConfig
from groundiff.model.fusion import FusionDecoder
from groundiff.model.grounding import FeatureShapes, GroundingModel, describe_layout
from groundiff.model.presence import PresenceHead
from groundiff.model.visual_encoder import VisualEncoder


def group_names_by_resolution(feature_shapes: FeatureShapes) -> dict[int, list[str]]:
    """Map side → names of the maps of that side, coarsest first, sorted by name within a level.

    The order is canonical (independent of the dict's order) because the model concatenates the maps
    of a level in this order: a reloaded checkpoint must read them the same way.

    Raises:
        ValueError: an empty layout, or a map that is not (C, h, w) with h == w.
    """
    if not feature_shapes:
        raise ValueError("feature_shapes is empty: pass the (C, h, w) shape of every U-Net map the model reads.")
    levels: dict[int, list[str]] = {}
    for name, shape in sorted(feature_shapes.items()):
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(
                f"Feature map {name!r} has shape {tuple(shape)}; the grounding model needs square (C, h, w) maps."
            )
        levels.setdefault(shape[-1], []).append(name)
    return dict(sorted(levels.items()))


def default_level_channels(feature_shapes: FeatureShapes) -> tuple[int, ...]:
    """The reference's reduced channels (16/32/64/128, coarse to fine) for this layout's level count:
    the finest levels keep the reference's widths; levels beyond four, coarser still, get 8, 4, …"""
    reference = GroundingModelConfig().level_channels
    count = len(group_names_by_resolution(feature_shapes))
    extra = tuple(max(1, reference[0] >> (count - len(reference) - i)) for i in range(count - len(reference)))
    return (extra + reference)[-count:]


def build_grounding_model(
    config: GroundingModelConfig,
    feature_shapes: Mapping[str, tuple[int, int, int]],
    text_width: int,
    *,
    image_size: int | None = None,
) -> GroundingModel:
    """A freshly initialised grounding model for maps of `feature_shapes` and class embeddings of `text_width`.

    Maps are grouped into resolution levels by their side; `config.level_channels` needs one entry
    per level. The returned model's `config` has `mask_size` resolved (`config.mask_size`, else
    `image_size`), so saving `model.config.to_dict()`, `model.feature_shapes` and `model.text_width`
    is enough to rebuild it.

    Args:
        config: sizes.
        feature_shapes: map name (`step49.up3`) → (C, h, w), e.g. from one dataset sample.
        text_width: width D of the class embeddings (768 for SD 1.5's CLIP ViT-L/14, 1024 for SD 2).
        image_size: side of the generated images; the default mask size.
    Raises:
        ValueError: a level count that differs from `len(config.level_channels)`, a finest side not
            divisible by `config.patch_size`, or no mask size.
    """
    shapes: FeatureShapes = {
        name: (int(shape[0]), int(shape[1]), int(shape[2])) for name, shape in feature_shapes.items()
    }
    levels = group_names_by_resolution(shapes)
    if len(levels) != len(config.level_channels):
        raise ValueError(
            f"The feature layout has {len(levels)} resolution level(s) (sides {', '.join(map(str, levels))}) but "
            f"config.level_channels={config.level_channels} has {len(config.level_channels)}; "
            "give one reduced channel count per level, coarse to fine."
        )
    finest = max(levels)
    if finest % config.patch_size:
        raise ValueError(
            f"The finest feature side {finest} is not divisible by config.patch_size={config.patch_size}; "
            "choose a patch size that divides it."
        )
    mask_size = config.mask_size if config.mask_size is not None else image_size
    if mask_size is None:
        raise ValueError("No mask size: set config.mask_size or pass image_size (the side of the generated images).")
    if text_width < 1:
        raise ValueError(f"text_width={text_width} must be the positive width of the class embeddings, e.g. 768.")
    visual_encoder = VisualEncoder(
        in_channels=[sum(shapes[name][0] for name in names) for names in levels.values()],
        native_sizes=list(levels),
        level_channels=config.level_channels,
        patch_size=config.patch_size,
        width=config.width,
        spectral_norm=config.spectral_norm,
        norm_groups=config.norm_groups,
    )
    fusion_decoder = FusionDecoder(
        text_width=text_width,
        width=config.width,
        heads=config.heads,
        layers=config.decoder_layers,
        ffn_width=config.ffn_width,
        dropout=config.dropout,
        mlp_layers=config.mlp_layers,
        out_channels=visual_encoder.out_channels,
    )
    return GroundingModel(
        config=dataclasses.replace(config, mask_size=mask_size),
        feature_shapes=shapes,
        levels=list(levels.values()),
        text_width=text_width,
        visual_encoder=visual_encoder,
        fusion_decoder=fusion_decoder,
        presence_head=PresenceHead(visual_encoder.out_channels, inputs=config.presence_inputs)
        if config.presence_head
        else None,
    )


__all__ = ["build_grounding_model", "describe_layout", "group_names_by_resolution"]

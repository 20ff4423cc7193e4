"""Grounding model: shapes for the tiny and SD 1.5 layouts, batch and padding independence, dropout,
layout errors, config round trip and the size of the reference model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from groundiff.capture.sizes import feature_shapes
from groundiff.model import GroundingModel, GroundingModelConfig, build_grounding_model, group_names_by_resolution
from groundiff.model.builder import default_level_channels
from groundiff.sd import architectures
from groundiff.sd import tiny as testing


def step_layout(unet_config: dict, latent_size: int, step: int) -> dict[str, tuple[int, int, int]]:
    """Feature layout as `GroundingDataset` yields it for one captured step: `step{S}.{block}` → (C, h, w)."""
    shapes = feature_shapes({k: v for k, v in unet_config.items() if not k.startswith("_")}, latent_size)
    return {f"step{step}.{block}": (shape[0], shape[1], shape[2]) for block, shape in shapes.items()}


# The tiny test pipeline at 32² images (16² latents) and SD 1.5 at 512² (64² latents), built on `meta`.
TINY_SHAPES = step_layout(dict(testing.tiny_components("sd1")["unet"].config), 16, step=1)
SD15_SHAPES = step_layout(architectures.sd15_unet_config(), 64, step=49)
TINY_CONFIG = GroundingModelConfig(
    level_channels=(2, 2, 4, 4), width=16, heads=2, decoder_layers=2, ffn_width=32, mlp_layers=3
)
TEXT_WIDTH = 12


def tiny_model(config: GroundingModelConfig = TINY_CONFIG, shapes=None, seed: int = 0) -> GroundingModel:
    torch.manual_seed(seed)
    return build_grounding_model(config, shapes or TINY_SHAPES, TEXT_WIDTH, image_size=32).eval()


def features(shapes: dict[str, tuple[int, int, int]], batch: int, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, *shape, generator=generator).half() for name, shape in shapes.items()}


def embeddings(batch: int, classes: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, classes, TEXT_WIDTH, generator=torch.Generator().manual_seed(seed))


def test_tiny_layout_output_shape() -> None:
    model = tiny_model()
    with torch.no_grad():
        logits = model(features(TINY_SHAPES, 2), embeddings(2, 3))
    assert logits.shape == (2, 3, 32, 32) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert model.config.mask_size == 32


def test_sd15_layout_with_reduced_widths() -> None:
    config = dataclasses.replace(TINY_CONFIG, mask_size=128)
    model = tiny_model(config, SD15_SHAPES)
    assert model.levels == [
        ["step49.down2", "step49.down3", "step49.mid"],
        ["step49.down1", "step49.up0"],
        ["step49.down0", "step49.up1"],
        ["step49.up2", "step49.up3"],
    ]
    assert model.visual_encoder.fusion_sizes == [16, 32, 64, 64]
    with torch.no_grad():
        logits = model(features(SD15_SHAPES, 1), embeddings(1, 2))
    assert logits.shape == (1, 2, 128, 128)


def test_reference_size_parameter_count() -> None:
    """Reference sizes on the SD 1.5 layout (768-wide CLIP): 17,275,472 parameters, 3.62 M in the visual
    encoder and 13.65 M in the fusion decoder (the reference code is ≈17.6 M by hand count)."""
    model = build_grounding_model(GroundingModelConfig(), SD15_SHAPES, 768, image_size=512)
    assert sum(p.numel() for p in model.parameters()) == 17_275_472
    assert model.visual_encoder.out_channels == 240
    assert model.visual_encoder.to_tokens.in_features == 240 * 16


def test_every_parameter_gets_a_gradient() -> None:
    model = tiny_model().train()
    model(features(TINY_SHAPES, 1), embeddings(1, 2)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_batch_of_two_equals_each_image_alone() -> None:
    """Regression: the reference flattened the batch, so queries attended to every image's tokens."""
    model = tiny_model()
    maps, queries = features(TINY_SHAPES, 2), embeddings(2, 3)
    with torch.no_grad():
        batched = model(maps, queries)
        alone = [model({k: v[i : i + 1] for k, v in maps.items()}, queries[i : i + 1]) for i in range(2)]
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_padded_slots_do_not_change_real_classes() -> None:
    model = tiny_model()
    maps, queries = features(TINY_SHAPES, 2), embeddings(2, 3)
    padding = torch.tensor([[False, False, True], [False, False, False]])
    with torch.no_grad():
        padded = model(maps, queries, padding)
        image0 = model({k: v[:1] for k, v in maps.items()}, queries[:1, :2])
        junk = queries.clone()
        junk[0, 2] = 100.0
        padded_junk = model(maps, junk, padding)
        all_padded = model(maps, queries, torch.ones(2, 3, dtype=torch.bool))
    torch.testing.assert_close(padded[0, :2], image0[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded_junk[:, :2], padded[:, :2], rtol=1e-4, atol=1e-5)
    assert torch.isfinite(all_padded).all()


def test_dropout_only_in_train_mode() -> None:
    maps, queries = features(TINY_SHAPES, 1), embeddings(1, 2)
    # Without spectral norm the model has no state that changes in a forward pass: only dropout differs.
    for dropout, differs in ((0.0, False), (0.3, True)):
        model = tiny_model(dataclasses.replace(TINY_CONFIG, dropout=dropout, spectral_norm=False))
        with torch.no_grad():
            model.train()
            train = [model(maps, queries) for _ in range(2)]
            model.eval()
            evaluation = [model(maps, queries) for _ in range(2)]
        assert (not torch.equal(train[0], train[1])) == differs
        assert torch.equal(evaluation[0], evaluation[1])


def test_layout_and_text_width_mismatch_name_both_layouts() -> None:
    model = tiny_model()
    maps = features(TINY_SHAPES, 1)
    del maps["step1.up3"]
    with pytest.raises(ValueError, match=r"expects \{step1.down0: 8x8x8.*got \{step1.down0: 8x8x8"):
        model(maps, embeddings(1, 2))
    maps = features(TINY_SHAPES, 1)
    maps["step1.up3"] = torch.randn(1, 4, 16, 16)
    with pytest.raises(ValueError, match="step1.up3: 4x16x16"):
        model(maps, embeddings(1, 2))
    with pytest.raises(ValueError, match="text width 12.*text width 7"):
        model(features(TINY_SHAPES, 1), torch.randn(1, 2, 7))
    with pytest.raises(ValueError, match="class_padding"):
        model(features(TINY_SHAPES, 1), embeddings(1, 2), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="Batch sizes differ"):
        model(features(TINY_SHAPES, 2), embeddings(1, 2))


def test_builder_errors() -> None:
    with pytest.raises(ValueError, match="4 resolution level.*has 3"):
        build_grounding_model(
            dataclasses.replace(TINY_CONFIG, level_channels=(2, 2, 2)), TINY_SHAPES, 12, image_size=32
        )
    with pytest.raises(ValueError, match="patch_size"):
        build_grounding_model(dataclasses.replace(TINY_CONFIG, patch_size=3), TINY_SHAPES, 12, image_size=32)
    with pytest.raises(ValueError, match="mask size"):
        build_grounding_model(TINY_CONFIG, TINY_SHAPES, 12)
    with pytest.raises(ValueError, match="square"):
        group_names_by_resolution({"step1.up3": (8, 16, 8)})


def test_any_number_of_levels() -> None:
    shapes = {"step1.up3": (8, 16, 16)}
    model = tiny_model(dataclasses.replace(TINY_CONFIG, level_channels=(4,)), shapes)
    with torch.no_grad():
        assert model(features(shapes, 1), embeddings(1, 2)).shape == (1, 2, 32, 32)


def test_config_json_round_trip_and_validation() -> None:
    config = build_grounding_model(TINY_CONFIG, TINY_SHAPES, 12, image_size=32).config
    restored = GroundingModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.mask_size == 32
    with pytest.raises(ValueError, match="valid fields: .*width"):
        GroundingModelConfig.from_dict({"widht": 8})
    with pytest.raises(ValueError, match="divisible by heads"):
        GroundingModelConfig(width=10, heads=4)
    with pytest.raises(ValueError, match="dropout"):
        GroundingModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="level_channels"):
        GroundingModelConfig(level_channels=())


def test_level_order_does_not_depend_on_the_order_of_the_layout_dict() -> None:
    # Regression: safetensors loads maps in a varying order; the concatenation order must not follow it.
    shapes = feature_shapes(dict(testing.tiny_pipeline("sd1").unet.config), latent_size=16)
    forward = build_grounding_model(GroundingModelConfig(mask_size=32), shapes, 32)
    backward = build_grounding_model(GroundingModelConfig(mask_size=32), dict(reversed(list(shapes.items()))), 32)
    assert forward.levels == backward.levels
    assert forward.levels[0] == sorted(forward.levels[0])


def test_default_level_channels_follow_the_layouts_level_count() -> None:
    def layout(*sides: int) -> dict[str, tuple[int, int, int]]:
        return {f"m{side}": (4, side, side) for side in sides}

    assert default_level_channels(layout(2, 4, 8, 16)) == (16, 32, 64, 128)
    assert default_level_channels(layout(4, 8, 16)) == (32, 64, 128)  # the mini world's U-Net
    assert default_level_channels(layout(2, 4, 8, 16, 32, 64)) == (4, 8, 16, 32, 64, 128)


def test_checkpoint_metadata_is_typed_and_round_trips_through_json():
    from groundiff.model.checkpoint import CheckpointError, CheckpointMeta

    meta = CheckpointMeta(
        model_config={"width": 32},
        feature_shapes={"step19.up0": (8, 4, 4), "step19.down0": (4, 8, 8)},
        text_width=32,
        text_model="miniworld",
        set_config={"template": "a photograph of a {x} and a {y}"},
        template="{x} and {y}",
        end_of_text=False,
        epoch=3,
    )
    data = json.loads(json.dumps(meta.to_json()))
    assert data["feature_shapes"]["step19.up0"] == [8, 4, 4]  # JSON has lists; the loaded metadata has tuples
    again = CheckpointMeta.from_json({**data, "written_by_a_newer_version": 1}, "checkpoint.json")
    assert again == meta and list(again.feature_shapes) == ["step19.down0", "step19.up0"]
    del data["text_model"], data["template"]
    with pytest.raises(
        CheckpointError, match="'checkpoint.json' lacks text_model, template; the checkpoint is damaged"
    ):
        CheckpointMeta.from_json(data, "checkpoint.json")

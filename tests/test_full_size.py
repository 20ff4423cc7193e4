"""Full-size SD 1.5 U-Net built from config with random weights: captured shapes at 512×512 (slow)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import UNet2DConditionModel

from groundiff.capture import CaptureConfig, capture_features, group_by_resolution
from groundiff.capture.sizes import bytes_per_image, feature_shapes
from groundiff.sd.architectures import sd15_unet_config

# Per-image (C, H, W) of each block of SD 1.5 at 512² (64² latents), conditional half.
SD15_SHAPES = {
    "down0": (320, 32, 32),
    "down1": (640, 16, 16),
    "down2": (1280, 8, 8),
    "down3": (1280, 8, 8),
    "mid": (1280, 8, 8),
    "up0": (1280, 16, 16),
    "up1": (1280, 32, 32),
    "up2": (640, 64, 64),
    "up3": (320, 64, 64),
}


def test_meta_shapes_of_sd15_match_the_reference_table():
    shapes = feature_shapes(sd15_unet_config(), latent_size=64)
    assert shapes == SD15_SHAPES
    both = feature_shapes(sd15_unet_config(), latent_size=64, capture=CaptureConfig(layout="uncond+cond"))
    channels = {side: 0 for side in (8, 16, 32, 64)}
    for c, _, side in both.values():
        channels[side] += c
    # The reference implementation's level widths (both halves): 7680 / 3840 / 3200 / 1920.
    assert channels == {8: 7680, 16: 3840, 32: 3200, 64: 1920}
    assert bytes_per_image(shapes, torch.float16) == 2 * 6_307_840


@pytest.mark.slow
def test_random_weight_sd15_unet_captures_reference_shapes_at_512():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**sd15_unet_config()).eval()
    pipe = SimpleNamespace(unet=unet, scheduler=SimpleNamespace(timesteps=[1]), do_classifier_free_guidance=True)
    with torch.no_grad(), capture_features(pipe) as features:
        unet(torch.randn(2, 4, 64, 64), 1, encoder_hidden_states=torch.randn(2, 77, 768))
    assert {name: tuple(t.shape[1:]) for name, t in features.maps[0].items()} == SD15_SHAPES
    assert list(group_by_resolution(features.maps[0])) == [8, 16, 32, 64]

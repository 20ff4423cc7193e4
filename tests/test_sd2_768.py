"""SD 2.x at its native 768² with v-prediction, on a tiny random-weight pipeline: the VAE downsamples by
8 as the real one does, so the U-Net runs on 96² latents and its maps have SD 2's sides (96/48/24/12)."""

from __future__ import annotations

import numpy as np
import torch

from groundiff.capture import CaptureConfig, GenerationSettings, generate_with_features
from groundiff.capture.hooks import hook_counts
from groundiff.capture.sizes import feature_shapes
from groundiff.sd import tiny as testing
from groundiff.sd.architectures import sd2_unet_config

# Full-size SD 2.x at 768² (96² latents), conditional half.
SD2_768_SHAPES = {
    "down0": (320, 48, 48),
    "down1": (640, 24, 24),
    "down2": (1280, 12, 12),
    "down3": (1280, 12, 12),
    "mid": (1280, 12, 12),
    "up0": (1280, 24, 24),
    "up1": (1280, 48, 48),
    "up2": (640, 96, 96),
    "up3": (320, 96, 96),
}


def test_tiny_sd2_generates_768_images_with_v_prediction_and_96_latent_features():
    pipe = testing.tiny_pipeline("sd2-768")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 768
    before = hook_counts(pipe.unet)
    # Without guidance (batch 1) and only the two finest up blocks: the cheapest call at this size.
    capture = CaptureConfig(blocks=("up2", "up3"), steps=(0, -1))
    output = generate_with_features(
        pipe, ["a photograph of a dog"], [0], settings=GenerationSettings(2, guidance_scale=1.0), capture=capture
    )
    assert output.images.shape == (1, 768, 768, 3) and output.images.dtype == np.uint8
    assert {n: tuple(t.shape) for n, t in output.features.maps[1].items()} == {
        "up2": (1, 16, 96, 96),
        "up3": (1, 8, 96, 96),
    }
    assert output.features.steps == (0, 1) and torch.isfinite(output.features.maps[1]["up3"]).all()
    assert hook_counts(pipe.unet) == before


def test_full_size_sd2_layout_at_768_from_config_without_weights():
    assert feature_shapes(sd2_unet_config(), latent_size=96) == SD2_768_SHAPES

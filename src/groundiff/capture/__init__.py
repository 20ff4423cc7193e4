"""U-Net feature capture on diffusers Stable-Diffusion-style pipelines."""

from groundiff.capture.blocks import default_block_names, group_by_resolution, resolve_blocks
from groundiff.capture.config import CaptureConfig, Layout
from groundiff.capture.features import CapturedFeatures
from groundiff.capture.generation import GenerationOutput, GenerationSettings, generate_with_features
from groundiff.capture.recorder import capture_features

__all__ = [
    "CaptureConfig",
    "CapturedFeatures",
    "GenerationOutput",
    "GenerationSettings",
    "Layout",
    "capture_features",
    "default_block_names",
    "generate_with_features",
    "group_by_resolution",
    "resolve_blocks",
]

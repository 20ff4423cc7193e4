"""Grounding model: visual encoder, fusion decoder, the model and its builder."""

from groundiff.model.builder import build_grounding_model, group_names_by_resolution
from groundiff.model.config import GroundingModelConfig
from groundiff.model.fusion import FusionDecoder
from groundiff.model.grounding import FeatureShapes, GroundingModel, GroundingOutput, describe_layout
from groundiff.model.presence import PresenceHead
from groundiff.model.visual_encoder import VisualEncoder

__all__ = [
    "FeatureShapes",
    "FusionDecoder",
    "GroundingModel",
    "GroundingModelConfig",
    "GroundingOutput",
    "PresenceHead",
    "VisualEncoder",
    "build_grounding_model",
    "describe_layout",
    "group_names_by_resolution",
]

"""Labelers: off-the-shelf segmenters that turn a generated image into one mask per prompted class."""

from groundiff.labeling.base import Labeler, LabelResult

__all__ = ["LabelResult", "Labeler"]

"""Steps 1-2 of the method: draw prompts, generate images with their U-Net features, label and score them.

Names are imported on first use, so that `groundiff --help` and config parsing stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GenerateConfig": "config",
    "GenerateReport": "generate",
    "generate_set": "generate",
    "label_set": "annotate",
    "score_set": "annotate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'groundiff.generation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"groundiff.generation.{_EXPORTS[name]}"), name)

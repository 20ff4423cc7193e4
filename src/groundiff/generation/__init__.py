"""Steps 1-2 of the method: draw prompts, generate images with their U-Net features, label and score them.

Names are imported on first use, so that `groundiff --help` and config parsing stay fast.
"""

from __future__ import annotations

from groundiff import lazy_exports

_EXPORTS = {
    "GenerateConfig": "config",
    "GenerateReport": "generate",
    "generate_set": "generate",
    "label_set": "annotate",
    "score_set": "annotate",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

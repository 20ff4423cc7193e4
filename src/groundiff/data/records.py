"""One dataset sample and its files in the WebDataset layout (one key, several extensions).

00000042.png                   the generated image, RGB
00000042.features.safetensors  U-Net maps (C, h, w) under flat names `step{S}.{block}`
00000042.mask0.png, .mask1.png one 1-bit mask per class, in the order of `classes`
00000042.json                  prompt, classes, seeds, model, step, labeler and scores
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

FEATURES_EXT = "features.safetensors"
ATTENTION_EXT = "attention.safetensors"


@dataclass
class SampleRecord:
    """A generated sample.

    Attributes:
        index: sample index in its set (the key is its 8-digit form).
        image: (H, W, 3) uint8 in [0, 255].
        features: flat name `step{S}.{block}` → (C, h, w) tensor (float16 by default).
        masks: one (H, W) bool mask per entry of `meta["classes"]`, same order; empty before labeling.
        meta: JSON-serialisable metadata; always has `prompt` and `classes`.
        attention: optional (N, s, s) cross-attention heat per class in [0, 1] (the training-free reference).
    """

    index: int
    image: np.ndarray
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    attention: torch.Tensor | None = None

    @property
    def key(self) -> str:
        return sample_key(self.index)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])


def sample_key(index: int) -> str:
    return f"{index:08d}"


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB (H, W, 3) uint8 image or a 1-bit (H, W) bool mask."""
    image = Image.fromarray(array) if array.dtype == np.uint8 else Image.fromarray(array).convert("1")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_png(data: bytes, *, mask: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 for images, (H, W) bool for masks."""
    image = Image.open(io.BytesIO(data))
    return np.asarray(image.convert("1" if mask else "RGB"), dtype=bool if mask else np.uint8)


def encode_record(record: SampleRecord) -> dict[str, bytes]:
    """Extension → bytes of every file of the sample."""
    files = {"png": encode_png(record.image), "json": json.dumps(record.meta, sort_keys=True).encode()}
    if record.features:
        files[FEATURES_EXT] = save_safetensors({k: v.contiguous() for k, v in record.features.items()})
    if record.attention is not None:
        files[ATTENTION_EXT] = save_safetensors({"heat": record.attention.contiguous()})
    for position, mask in enumerate(record.masks):
        files[f"mask{position}.png"] = encode_png(mask.astype(bool))
    return files


def decode_record(index: int, files: dict[str, bytes], *, features: bool = True) -> SampleRecord:
    """The sample back from its files; `features=False` skips the largest part."""
    meta = json.loads(files["json"])
    masks = [
        decode_png(files[f"mask{i}.png"], mask=True) for i in range(len(meta["classes"])) if f"mask{i}.png" in files
    ]
    tensors = load_safetensors(files[FEATURES_EXT]) if features and FEATURES_EXT in files else {}
    tensors = dict(sorted(tensors.items()))  # safetensors' load order varies between calls
    attention = load_safetensors(files[ATTENTION_EXT])["heat"] if ATTENTION_EXT in files else None
    return SampleRecord(index, decode_png(files["png"]), tensors, masks, meta, attention)

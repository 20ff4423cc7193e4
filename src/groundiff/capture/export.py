"""Writing one generation's images and features to a folder (PNG + safetensors per image)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from groundiff.capture.generation import GenerationOutput


def export_generation(output: GenerationOutput, folder: Path, feature_dtype: torch.dtype = torch.float16) -> list[Path]:
    """Write `image{i}.png` and `features{i}.safetensors` (flat names `step{S}.{block}`) per image.

    Returns:
        The written paths.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    features = output.features.to("cpu", feature_dtype)
    for index, image in enumerate(output.images):
        image_path = folder / f"image{index}.png"
        Image.fromarray(image).save(image_path)
        feature_path = folder / f"features{index}.safetensors"
        tensors = {name: t.contiguous() for name, t in features.flat(index).items()}
        save_file(
            tensors, str(feature_path), metadata={"prompt": output.prompts[index], "seed": str(output.seeds[index])}
        )
        written += [image_path, feature_path]
    return written

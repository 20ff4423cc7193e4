"""Where the shipped mini-world weights live in the package, and loading them by name, offline.

weights/pipeline/   diffusers StableDiffusionPipeline folder (fp16 safetensors)
weights/clip/       CLIP image tower, projections and logit scale; the text tower is the
                    pipeline's text encoder (stored once)
weights/labeler/    segmentation net of `MiniWorldLabeler`
weights/unet-ft/    the fine-tuned U-Net `miniworld-ft`, weights/unet-v2/ the second version `miniworld-v2`,
                    weights/unet-crowd/ `miniworld-crowd` (1 to 4 objects; see `groundiff.miniworld.versions`);
                    they share the pipeline's other parts
weights/grounding/  a grounding checkpoint (fp16) for `groundiff ground` / `serve` without --checkpoint
checkpoints/        each U-Net's training step, so a later session resumes its training from the shipped EMA
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from groundiff.miniworld.labeler import MiniWorldLabeler

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"
PIPELINE_DIR = WEIGHTS_DIR / "pipeline"
CLIP_DIR = WEIGHTS_DIR / "clip"
LABELER_DIR = WEIGHTS_DIR / "labeler"
GROUNDING_DIR = WEIGHTS_DIR / "grounding"


def require_weights(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"The mini-world {what} is missing at {path}. Reinstall groundiff from a checkout that has "
            f"src/groundiff/miniworld/weights/, or train it: python scripts/train_miniworld.py <part>."
        )
    return path


def load_miniworld_pipeline(  # noqa: ANN201
    *, model: str = "miniworld", dtype: torch.dtype = torch.float32, device: str = "cpu"
):
    """The shipped tiny StableDiffusionPipeline (64×64 images) with the U-Net version `model`, safety checker
    off, progress bar off."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from groundiff.miniworld.models import build_scheduler
    from groundiff.miniworld.versions import version_named

    version = version_named(model)
    folder = require_weights(PIPELINE_DIR / "model_index.json", "pipeline").parent
    swapped = {}
    if version.folder != "pipeline/unet":
        unet_dir = require_weights(WEIGHTS_DIR / version.folder / "config.json", f"{model} U-Net").parent
        swapped = {
            "unet": UNet2DConditionModel.from_pretrained(str(unet_dir), dtype=dtype),
            "scheduler": build_scheduler(version.prediction_type),
        }
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), dtype=dtype, safety_checker=None, requires_safety_checker=False, **swapped
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_miniworld_clip(*, dtype: torch.dtype = torch.float32):  # noqa: ANN201
    """The shipped tiny `transformers.CLIPModel` (text tower shared with the pipeline), for CLIP-IQA."""
    from transformers import CLIPConfig, CLIPModel

    require_weights(CLIP_DIR / "config.json", "CLIP")
    model = CLIPModel(CLIPConfig.from_pretrained(str(CLIP_DIR)))
    state = load_file(str(CLIP_DIR / "model.safetensors"))
    text = load_file(str(require_weights(PIPELINE_DIR / "text_encoder" / "model.safetensors", "text encoder")))
    state.update({k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text.items()})
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or any(not k.endswith("position_ids") for k in missing):
        raise RuntimeError(
            f"Mini-world CLIP weights do not match its config: missing {missing}, unexpected {unexpected}."
        )
    return model.to(dtype).eval()


def load_miniworld_labeler(**kwargs: int) -> MiniWorldLabeler:
    """The shipped `MiniWorldLabeler` (float32, CPU)."""
    return MiniWorldLabeler.from_folder(require_weights(LABELER_DIR, "labeler"), **kwargs)

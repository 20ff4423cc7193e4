"""Loading a Stable-Diffusion-style pipeline by built-in name, hub id, local folder or single file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from groundiff.sd import tiny as testing
from groundiff.sd.dtypes import parse_dtype
from groundiff.worlds import get_world, world_names

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")

# Built-in pipelines that need no download. The tiny ones have random weights: they show the
# mechanics (shapes, speed), not image quality.
BUILTIN_PIPELINES: dict[str, Callable[[], StableDiffusionPipeline]] = {
    "tiny-sd1": lambda: testing.tiny_pipeline("sd1"),
    "tiny-sd2": lambda: testing.tiny_pipeline("sd2"),
}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.endswith(SINGLE_FILE_SUFFIXES) or "\\" in source


def load_pipeline(
    source: str,
    *,
    dtype: str = "float32",
    device: str | None = None,
    single_file_config: str | None = None,
) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline (SD 1.x, SD 2.x or a fine-tune) ready for feature capture.

    Args:
        source: a world (`miniworld`, see `groundiff.worlds`), a built-in name (`tiny-sd1`, `tiny-sd2`),
            a hub id (`runwayml/stable-diffusion-v1-5`),
            a local folder in diffusers layout, or a single `.safetensors` / `.ckpt` checkpoint.
        dtype: `float32`, `float16` or `bfloat16`.
        device: `cpu`, `cuda`, …; default: CUDA when available.
        single_file_config: for single-file checkpoints without network, a local diffusers folder
            (or hub id in the cache) whose component configs match the checkpoint.
    The safety checker is left out: it blacks out images, which would corrupt a dataset.
    """
    torch_dtype = parse_dtype(dtype)
    device = device or default_device()
    world = get_world(source)
    if world is not None or source in BUILTIN_PIPELINES:
        pipe = world.pipeline(device="cpu") if world is not None else BUILTIN_PIPELINES[source]()  # float32
        if torch_dtype != torch.float32:
            pipe = pipe.to(dtype=torch_dtype)
    elif _looks_like_path(source) or Path(source).exists():
        pipe = _load_local(source, torch_dtype, single_file_config)
    else:
        pipe = _load_hub(source, torch_dtype)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded pipeline %s on %s in %s", source, device, dtype)
    return pipe


def _load_local(source: str, torch_dtype: torch.dtype, single_file_config: str | None) -> StableDiffusionPipeline:
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"Model path {source!r} does not exist. Pass a diffusers folder, a .safetensors/.ckpt file, "
            f"a hub id, a world ({', '.join(world_names())}) or a built-in name: {', '.join(BUILTIN_PIPELINES)}."
        )
    no_safety: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise ValueError(f"Model file {source!r} is no .safetensors or .ckpt checkpoint.")
        extra = {"config": single_file_config} if single_file_config else {}
        return StableDiffusionPipeline.from_single_file(str(path), dtype=torch_dtype, **extra, **no_safety)
    if not (path / "model_index.json").exists():
        raise ValueError(f"Folder {source!r} has no model_index.json; it is not a diffusers pipeline folder.")
    return StableDiffusionPipeline.from_pretrained(str(path), dtype=torch_dtype, **no_safety)


def _load_hub(hub_id: str, torch_dtype: torch.dtype) -> StableDiffusionPipeline:
    try:
        return StableDiffusionPipeline.from_pretrained(
            hub_id, dtype=torch_dtype, safety_checker=None, requires_safety_checker=False
        )
    except OSError as error:
        raise OSError(
            f"Could not load {hub_id!r} from the Hugging Face hub or its local cache ({error}). "
            f"Without network, download it once elsewhere and pass the local folder instead."
        ) from error


def load_text_components(source: str, *, device: str = "cpu") -> tuple[Any, Any]:
    """The frozen CLIP text encoder and tokenizer of a pipeline, without loading its U-Net or VAE.

    Built-in names build their pipeline (they are tiny); folders and hub ids load the
    `text_encoder` and `tokenizer` subfolders only.
    """
    world = get_world(source)
    if world is not None or source in BUILTIN_PIPELINES:
        pipe = world.pipeline(device="cpu") if world is not None else BUILTIN_PIPELINES[source]()
        return pipe.text_encoder.to(device).eval(), pipe.tokenizer
    from transformers import CLIPTextModel, CLIPTokenizer

    path = str(Path(source).expanduser()) if _looks_like_path(source) else source
    try:
        encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    except OSError as error:
        raise OSError(
            f"Could not load the text encoder of {source!r} ({error}). Pass the diffusers folder or hub id of "
            f"the model that generated the data (it is in the set's config.json, field 'model')."
        ) from error
    return encoder.to(device).eval(), tokenizer

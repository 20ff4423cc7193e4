"""Loading a Stable-Diffusion-style pipeline (SD 1.x, 2.x, SDXL) by built-in name, hub id, local folder or file.

Which pipeline class loads a model: the caller's `architecture` when given; else SDXL when the folder's
(or hub repository's, or `single_file_config`'s) `model_index.json` names an SDXL pipeline, or when a
`.safetensors` checkpoint holds SDXL's second text tower (`conditioner.embedders.1.*`); else SD.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeAlias

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from groundiff.sd import tiny as testing
from groundiff.sd.dtypes import parse_dtype
from groundiff.sd.sdxl import text_components
from groundiff.worlds import get_world, world_names

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")

Pipeline: TypeAlias = StableDiffusionPipeline | StableDiffusionXLPipeline
# Architecture name → the diffusers pipeline class that runs it.
PIPELINE_CLASSES: dict[str, type[Pipeline]] = {"sd": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}
# Tensor names only SDXL single-file checkpoints hold: its second text tower (OpenCLIP ViT-bigG/14).
SDXL_CHECKPOINT_PREFIX = "conditioner.embedders.1."

# Built-in pipelines that need no download. The tiny ones have random weights: they show the
# mechanics (shapes, speed), not image quality.
BUILTIN_PIPELINES: dict[str, Callable[[], Pipeline]] = {
    "tiny-sd1": lambda: testing.tiny_pipeline("sd1"),
    "tiny-sd2": lambda: testing.tiny_pipeline("sd2"),
    "tiny-sdxl": testing.tiny_sdxl_pipeline,
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
    architecture: str | None = None,
) -> Pipeline:
    """A Stable Diffusion pipeline (SD 1.x, SD 2.x, SDXL or a fine-tune) ready for feature capture.

    Args:
        source: a world (`miniworld`, see `groundiff.worlds`), a built-in name (`tiny-sd1`, `tiny-sd2`,
            `tiny-sdxl`), a hub id (`runwayml/stable-diffusion-v1-5`, `stabilityai/stable-diffusion-xl-base-1.0`),
            a local folder in diffusers layout, or a single `.safetensors` / `.ckpt` checkpoint.
        dtype: `float32`, `float16` or `bfloat16`.
        device: `cpu`, `cuda`, …; default: CUDA when available.
        single_file_config: for single-file checkpoints without network, a local diffusers folder
            (or hub id in the cache) whose component configs match the checkpoint.
        architecture: `sd` or `sdxl` to choose the pipeline class; default: from the model (see the
            module docstring). Needed for an SDXL `.ckpt` file without `single_file_config`.
    The safety checker (SD) and the watermarker (SDXL) are left out: they change images, which would
    corrupt a dataset.
    """
    torch_dtype = parse_dtype(dtype)
    device = device or default_device()
    if architecture is not None and architecture not in PIPELINE_CLASSES:
        raise ValueError(f"Unknown architecture {architecture!r}; choose one of {', '.join(PIPELINE_CLASSES)}.")
    world = get_world(source)
    if world is not None or source in BUILTIN_PIPELINES:
        pipe = world.pipeline(device="cpu") if world is not None else BUILTIN_PIPELINES[source]()  # float32
        if torch_dtype != torch.float32:
            pipe = pipe.to(dtype=torch_dtype)
    elif _looks_like_path(source) or Path(source).exists():
        pipe = _load_local(source, torch_dtype, single_file_config, architecture)
    else:
        pipe = _load_hub(source, torch_dtype, architecture)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded pipeline %s on %s in %s", source, device, dtype)
    return pipe


def pipeline_architecture(source: str, architecture: str | None = None, single_file_config: str | None = None) -> str:
    """`sd` or `sdxl`: the architecture of a local folder, checkpoint file or hub id, without loading weights.

    The caller's `architecture` wins; a folder or hub id is read from its `model_index.json` (for a
    hub id: downloaded, or from the cache); a single file from `single_file_config`'s `model_index.json`,
    else from its tensor names (`.safetensors` only; a `.ckpt` counts as SD unless told otherwise).
    """
    if architecture is not None:
        return architecture
    path = Path(source).expanduser()
    if path.is_file():
        if single_file_config is not None:
            return pipeline_architecture(single_file_config)
        return "sdxl" if path.suffix == ".safetensors" and _holds_sdxl_weights(path) else "sd"
    if path.is_dir():
        index = path / "model_index.json"
        class_name = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    else:
        class_name = DiffusionPipeline.load_config(source).get("_class_name", "")
    return "sdxl" if str(class_name).startswith("StableDiffusionXL") else "sd"


def _holds_sdxl_weights(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as checkpoint:
        names = checkpoint.keys()  # tensor names only; no tensor is read
    return any(name.startswith(SDXL_CHECKPOINT_PREFIX) for name in names)


def _without_image_filters(architecture: str) -> dict[str, Any]:
    """Keyword arguments that leave out SD's safety checker or SDXL's invisible watermark."""
    if architecture == "sdxl":
        return {"add_watermarker": False}
    return {"safety_checker": None, "requires_safety_checker": False}


def _load_local(
    source: str, torch_dtype: torch.dtype, single_file_config: str | None, architecture: str | None
) -> Pipeline:
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"Model path {source!r} does not exist. Pass a diffusers folder, a .safetensors/.ckpt file, "
            f"a hub id, a world ({', '.join(world_names())}) or a built-in name: {', '.join(BUILTIN_PIPELINES)}."
        )
    if path.is_file() and path.suffix not in SINGLE_FILE_SUFFIXES:
        raise ValueError(f"Model file {source!r} is no .safetensors or .ckpt checkpoint.")
    if path.is_dir() and not (path / "model_index.json").exists():
        raise ValueError(f"Folder {source!r} has no model_index.json; it is not a diffusers pipeline folder.")
    kind = pipeline_architecture(source, architecture, single_file_config)
    pipeline_class = PIPELINE_CLASSES[kind]
    options = _without_image_filters(kind)
    if path.is_file():
        extra = {"config": single_file_config} if single_file_config else {}
        return pipeline_class.from_single_file(str(path), dtype=torch_dtype, **extra, **options)
    return pipeline_class.from_pretrained(str(path), dtype=torch_dtype, **options)


def _load_hub(hub_id: str, torch_dtype: torch.dtype, architecture: str | None) -> Pipeline:
    try:
        kind = pipeline_architecture(hub_id, architecture)
        return PIPELINE_CLASSES[kind].from_pretrained(hub_id, dtype=torch_dtype, **_without_image_filters(kind))
    except OSError as error:
        raise OSError(
            f"Could not load {hub_id!r} from the Hugging Face hub or its local cache ({error}). "
            f"Without network, download it once elsewhere and pass the local folder instead."
        ) from error


def load_text_components(source: str, *, device: str = "cpu") -> tuple[Any, Any]:
    """The frozen text encoder and tokenizer of a pipeline (see `sdxl.text_components`), without its U-Net or VAE.

    Built-in names and single files build or load their whole pipeline; folders and hub ids load
    the `text_encoder` (and for SDXL `text_encoder_2`) and `tokenizer` subfolders only.
    """
    world = get_world(source)
    if world is not None or source in BUILTIN_PIPELINES:
        pipe = world.pipeline(device="cpu") if world is not None else BUILTIN_PIPELINES[source]()
        encoder, tokenizer = text_components(pipe)
        return encoder.to(device).eval(), tokenizer
    if Path(source).expanduser().is_file():
        encoder, tokenizer = text_components(load_pipeline(source, device="cpu"))
        return encoder.to(device).eval(), tokenizer
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = str(Path(source).expanduser()) if _looks_like_path(source) else source
    try:
        components: dict[str, Any] = {
            "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder"),
            "tokenizer": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
        }
        if pipeline_architecture(path) == "sdxl":
            components["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2")
    except OSError as error:
        raise OSError(
            f"Could not load the text encoder of {source!r} ({error}). Pass the diffusers folder or hub id of "
            f"the model that generated the data (it is in the set's config.json, field 'model')."
        ) from error
    encoder, tokenizer = text_components(SimpleNamespace(**components))
    return encoder.to(device).eval(), tokenizer

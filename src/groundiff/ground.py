"""`ground`: generate an image from a prompt and return one mask per named object.

The pipeline runs with the sampler settings and feature capture of the set the grounding model was
trained on (stored in its checkpoint), so the model sees the features it learned from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from groundiff.config import option
from groundiff.text import PROMPT_TEMPLATES, PromptTemplate

# torch and the modules that load it are imported where they are used, so that the CLI reads
# GroundConfig without loading them.
if TYPE_CHECKING:
    import torch

    from groundiff.capture import CaptureConfig, GenerationSettings
    from groundiff.model import GroundingModel
    from groundiff.model.checkpoint import CheckpointMeta

# What an object name may not keep in its mask's file name (all but letters, digits, "_", "." and "-").
_UNSAFE_CHARACTER = re.compile(r"[^\w.-]")


# With --image: the noise level added before the one U-Net pass, as a step of the training set's run.
# Measured on the mini world's truth renders (docs/RESULTS.md, "Real images"): the last step is best.
DEFAULT_NOISE_STEP = -1


@dataclass
class GroundConfig:
    """An image generated from a prompt with a mask for each of its objects (`groundiff ground`)."""

    prompt: str | None = option(None, "the prompt to draw (not with --image)", positional=True)
    image: str | None = option(None, "ground this image file instead of drawing one (name the objects with --objects)")
    noise_step: int = option(
        DEFAULT_NOISE_STEP, "with --image: the denoising step whose noise is added before the U-Net pass (-1: last)"
    )
    checkpoint: str | None = option(
        None, "a trained grounding checkpoint folder; default: the one shipped with the model's world (miniworld)"
    )
    model: str | None = option(
        None, "the diffusion model; default: the checkpoint's, or miniworld without --checkpoint"
    )
    objects: tuple[str, ...] | None = option(None, "object names; default: parsed from the prompt", many=True)
    seed: int = option(0, "")
    dtype: Literal["float32", "float16", "bfloat16"] = option("float32", "")
    device: str | None = option(None, "")
    out: str = option("grounded", "folder for image, masks and overlay")

    def __post_init__(self) -> None:
        if self.image is None and not self.prompt:
            raise ValueError("Give a prompt to draw, or --image FILE with --objects to ground an existing image.")
        if self.image is not None and self.prompt:
            raise ValueError("Give a prompt or --image, not both; with --image, name the objects with --objects.")
        if self.image is not None and not self.objects:
            raise ValueError(f"Name the objects to find in {self.image!r} with --objects, e.g. --objects dog sofa.")


@dataclass
class GroundingResult:
    """An image and its masks.

    Attributes:
        image: (H, W, 3) uint8.
        masks: object name → (H, W) bool, probability > 0.5; all False for an object not found.
        probabilities: object name → (H, W) float32 in [0, 1].
        found: object name → whether it was found (`GroundingModel.found`: a mask with a pixel, the
            presence output of a model trained with negative queries, the share of its mask it keeps
            against the other objects asked), and its mask at the image's size has a pixel.
        presence: object name → presence probability in [0, 1], for a model with a presence output.
    """

    prompt: str
    image: np.ndarray
    masks: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]
    found: dict[str, bool] = field(default_factory=dict)
    presence: dict[str, float] | None = None


def objects_from_prompt(prompt: str, template: str = PROMPT_TEMPLATES["generation"]) -> list[str]:
    """The objects of a prompt written in `template`: "a photograph of a dog and a sofa" → [dog, sofa].

    Raises:
        ValueError: the prompt does not follow the template; name the objects explicitly instead.
    """
    text = PromptTemplate(template).text
    head, rest = text.split("{x}")
    joiner, tail = rest.split("{y}") if "{y}" in rest else ("\\0", rest)
    if not (prompt.startswith(head) and prompt.endswith(tail)) or len(prompt) <= len(head) + len(tail):
        raise ValueError(f"Prompt {prompt!r} does not follow the template {text!r}; name the objects with --objects.")
    body = prompt[len(head) : len(prompt) - len(tail)]
    return [name.strip() for name in body.split(joiner)]


def mask_files(names: Sequence[str]) -> dict[str, str]:
    """Object name → the file name of its mask, `mask_{name}.png` with path characters replaced.

    A name never becomes a path: "../../x" → `mask_.._.._x.png`, "a/b" → `mask_a_b.png`.

    Raises:
        ValueError: a name is empty, too long for a file name, or gives the same file as another name.
    """
    files: dict[str, str] = {}
    for name in names:
        if not name.strip():
            raise ValueError("An object name is empty; name each object, e.g. --objects dog sofa.")
        file = f"mask_{_UNSAFE_CHARACTER.sub('_', name)}.png"
        if len(file.encode()) > 255:
            raise ValueError(f"Object name {name[:32]!r}... is too long for a file name; give a shorter one.")
        clash = next((other for other, taken in files.items() if taken == file), None)
        if clash is not None:
            raise ValueError(
                f"Objects {clash!r} and {name!r} would both be saved as {file}; give each object once, by distinct "
                f"names."
            )
        files[name] = file
    return files


def grounding_paths(out: Path, names: Sequence[str]) -> dict[str, Path]:
    """Object name → where `write_grounding` saves its mask; call before generating to fail early.

    Raises:
        ValueError: `out` is a file, or a name is refused by `mask_files`.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder; pass a folder path for the results.")
    return {name: out / file for name, file in mask_files(names).items()}


DEFAULT_WORLD = "miniworld"


def resolve_checkpoint(checkpoint: str | None, model: str | None) -> tuple[Path, str | None]:
    """The checkpoint folder to load and the diffusion model to run (None: the checkpoint's own).

    Without a checkpoint, the world of `model` (default: the mini world) supplies its shipped one.

    Raises:
        ValueError: no checkpoint was given and `model` has no shipped checkpoint.
    """
    from groundiff.worlds import get_world

    if checkpoint is not None:
        return Path(checkpoint), model
    name = model or DEFAULT_WORLD
    world = get_world(name)
    if world is None or world.grounding_checkpoint is None:
        raise ValueError(
            f"Model {name!r} ships no grounding checkpoint; pass --checkpoint with a folder made by `groundiff train` "
            f"on that model's features (or use --model {DEFAULT_WORLD}, which ships one)."
        )
    return Path(world.grounding_checkpoint()), name


def trained_steps(meta: CheckpointMeta) -> list[int]:
    """The denoising step indices whose features the model reads, ascending (from `step{S}.{block}` names)."""
    return sorted({int(name.split(".")[0].removeprefix("step")) for name in meta.feature_shapes})


def capture_for(
    meta: CheckpointMeta, *, steps: int | None = None, guidance_scale: float | None = None
) -> tuple[CaptureConfig, GenerationSettings]:
    """The capture and sampler settings of the training set recorded in a checkpoint's metadata.

    `steps` and `guidance_scale` replace the training set's; the captured steps then keep their place
    counted from the end (the model was trained on the last step of 20: it reads the last of `steps`).
    """
    from groundiff.capture import CaptureConfig, GenerationSettings

    set_config = meta.set_config
    trained = trained_steps(meta)
    capture_steps = tuple(trained) if steps is None else tuple(s - set_config["steps"] for s in trained)
    blocks = tuple(dict.fromkeys(name.split(".", 1)[1] for name in meta.feature_shapes))
    capture = CaptureConfig(blocks=blocks, steps=capture_steps, layout=set_config["feature_layout"])
    settings = GenerationSettings(
        num_inference_steps=set_config["steps"] if steps is None else steps,
        guidance_scale=set_config["guidance_scale"] if guidance_scale is None else guidance_scale,
        height=set_config.get("height"),
        width=set_config.get("width"),
    )
    return capture, settings


def ground(
    pipe: Any,
    model: GroundingModel,
    meta: CheckpointMeta,
    prompt: str,
    *,
    objects: Sequence[str] | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> GroundingResult:
    """Generate `prompt` with `pipe` and segment each object with the grounding `model`.

    Args:
        pipe: the Stable Diffusion pipeline whose features the model was trained on.
        model, meta: from `groundiff.model.checkpoint.load_grounding_model`.
        objects: names to segment; default: parsed from the prompt with the generation template.
        steps, guidance_scale: sampler settings; default: the training set's (see `capture_for`).
        on_step: called with (steps done, steps) after each denoising step, e.g. for a progress bar.
    Raises:
        ValueError: the objects cannot be parsed from the prompt, or their names are refused by `mask_files`.
    """
    import torch

    from groundiff.capture import generate_with_features

    names = list(objects) if objects else objects_from_prompt(prompt, meta.set_config["template"])
    mask_files(names)  # before the (slow) generation
    capture, settings = capture_for(meta, steps=steps, guidance_scale=guidance_scale)
    if on_step is not None:
        total = settings.num_inference_steps

        def step_end(pipe: Any, step: int, timestep: Any, values: dict[str, Any]) -> dict[str, Any]:
            on_step(step + 1, total)
            return values

        settings.extra["callback_on_step_end"] = step_end
    # Captured step k of this run stands in for trained step k (they differ when `steps` is changed).
    step_names = dict(zip(capture.resolve_steps(settings.num_inference_steps), trained_steps(meta), strict=True))
    with torch.no_grad():
        output = generate_with_features(pipe, [prompt], [seed], settings=settings, capture=capture)
    maps = {
        f"step{step_names[step]}.{block}": t
        for step, blocks in output.features.maps.items()
        for block, t in blocks.items()
    }
    return ground_maps(pipe, model, meta, prompt, output.images[0], maps, names)


def ground_image(
    pipe: Any,
    model: GroundingModel,
    meta: CheckpointMeta,
    image: np.ndarray,
    objects: Sequence[str],
    *,
    noise_step: int = DEFAULT_NOISE_STEP,
    seed: int = 0,
) -> GroundingResult:
    """Segment `objects` in a given image (a photograph, a render) that the pipeline did not draw.

    The image is resized to the pipeline's resolution, encoded with its VAE, noised to the timestep of
    denoising step `noise_step` of the training set's run, and passed once through the U-Net with the
    generation prompt naming `objects` (see `capture.images.features_of_images`); the masks come back
    at the image's own size.

    Args:
        image: (H, W, 3) uint8 RGB.
        noise_step: the denoising step whose noise level is added (-1: the last, the least noise).
        seed: seed of the added noise.
    Raises:
        ValueError: no objects, a name refused by `mask_files`, or an image that is not (H, W, 3) uint8.
    """
    import torch
    from PIL import Image

    from groundiff.capture.images import features_of_images

    if not objects:
        raise ValueError("Name the objects to find in the image, e.g. --objects dog sofa.")
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"The image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}.")
    names = list(objects)
    mask_files(names)
    capture, settings = capture_for(meta)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    height, width = settings.height or side, settings.width or side
    resized = np.array(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
    prompt = PromptTemplate(meta.set_config["template"]).format(names)[0]
    with torch.no_grad():
        output = features_of_images(
            pipe,
            resized[None],
            [prompt],
            [seed],
            num_inference_steps=settings.num_inference_steps,
            noise_step=noise_step,
            capture=capture,
        )
    maps = {name: t[None] for name, t in output.features.flat(0).items()}  # (1, C, h, w)
    return ground_maps(pipe, model, meta, prompt, image, maps, names)


def ground_maps(
    pipe: Any,
    model: GroundingModel,
    meta: CheckpointMeta,
    prompt: str,
    image: np.ndarray,
    maps: dict[str, torch.Tensor],
    names: list[str],
) -> GroundingResult:
    """Masks of `names` from one image's captured maps (`step{S}.{block}` → (1, C, h, w)), at the image's
    size; an object the model answers "not found" (see `GroundingResult.found`) gets an empty mask."""
    import torch
    import torch.nn.functional as F

    from groundiff.data.batching import ClassEmbedder
    from groundiff.sd.sdxl import text_components

    with torch.no_grad():
        device = next(model.parameters()).device
        features = {name: t[:1].float().to(device) for name, t in maps.items()}
        embedder = ClassEmbedder.for_checkpoint(meta, *text_components(pipe))  # SDXL: both towers
        output = model.answer(features, embedder(names)[None].to(device), None)  # logits (1, N, S, S)
        resized = F.interpolate(output.logits.sigmoid().float(), size=image.shape[:2], mode="bilinear")[0]
        probabilities = resized.cpu().numpy()  # (N, H, W)
    presence = None if output.presence is None else output.presence[0].sigmoid().float().cpu().tolist()
    answers = model.found(output)[0].tolist()
    found = {name: bool(answers[i] and (probabilities[i] > 0.5).any()) for i, name in enumerate(names)}
    return GroundingResult(
        prompt=prompt,
        image=image,
        masks={name: (probabilities[i] > 0.5) & found[name] for i, name in enumerate(names)},
        probabilities={name: probabilities[i] for i, name in enumerate(names)},
        found=found,
        presence=None if presence is None else dict(zip(names, presence, strict=True)),
    )


def write_grounding(result: GroundingResult, out: Path) -> list[Path]:
    """`image.png`, one mask per object (file names from `mask_files`) and `overlay.png` with a legend."""
    from PIL import Image

    from groundiff.visualize import legend_handles, overlay, plt, save_figure

    masks = grounding_paths(out, list(result.masks))  # every name checked before the first file is written
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "image.png"]
    Image.fromarray(result.image).save(paths[0])
    for name, mask in result.masks.items():
        paths.append(masks[name])
        Image.fromarray(mask.astype(np.uint8) * 255).save(paths[-1])
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.imshow(overlay(result.image, list(result.masks.values())), interpolation="nearest")
    axis.set_axis_off()
    axis.set_title(result.prompt, fontsize=8)
    labels = [name if result.found.get(name, True) else f"{name} (not found)" for name in result.masks]
    axis.legend(handles=legend_handles(labels), fontsize=7, loc="lower right")
    paths.append(save_figure(figure, out / "overlay.png"))
    return paths


def ground_and_write(config: GroundConfig) -> tuple[GroundingResult, list[Path]]:
    """Load the checkpoint and its diffusion model, ground `config.prompt` and write the results to `config.out`.

    The object names and `--out` are checked before the (slow) pipeline loads. Returns the result and
    the files written (see `write_grounding`).
    """
    from groundiff.model.checkpoint import load_grounding_model
    from groundiff.sd.pipelines import load_pipeline

    image = read_image(Path(config.image)) if config.image is not None else None
    checkpoint, model_name = resolve_checkpoint(config.checkpoint, config.model)
    model, meta = load_grounding_model(checkpoint)
    objects = list(config.objects or objects_from_prompt(config.prompt or "", meta.set_config["template"]))
    grounding_paths(Path(config.out), objects)
    pipe = load_pipeline(model_name or meta.text_model, dtype=config.dtype, device=config.device)
    model = model.to(pipe.device)
    if image is not None:
        result = ground_image(pipe, model, meta, image, objects, noise_step=config.noise_step, seed=config.seed)
    else:
        result = ground(pipe, model, meta, config.prompt or "", objects=objects, seed=config.seed)
    return result, write_grounding(result, Path(config.out))


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file.

    Raises:
        FileNotFoundError: no such file. ValueError: not an image PIL can read.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"--image {str(path)!r} does not exist; pass a PNG or JPEG file.")
    try:
        with Image.open(path) as picture:
            return np.array(picture.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"--image {str(path)!r} is not an image PIL can read ({error}).") from None

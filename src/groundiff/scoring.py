"""No-reference image quality: CLIP-IQA scores per image, and keeping the best fraction of a set.

CLIP-IQA (Wang, Chan and Loy, "Exploring CLIP for Assessing the Look and Feel of Images", AAAI 2023):
the cosine similarities of an image's CLIP embedding with the antonym prompts "Good photo." and
"Bad photo.", times CLIP's logit scale (100 for OpenAI CLIP, the paper's factor), softmax over the
pair; the score is the probability of "good". It differs from the paper in one detail: images are
resized to the vision tower's input size (standard CLIP preprocessing) instead of being fed at full
resolution without positional embeddings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from groundiff.worlds import get_world

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IQA_PROMPTS = ("Good photo.", "Bad photo.")
MAX_LOGIT_SCALE = 100.0  # CLIP clamps its learned temperature here


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores (N, H, W, 3) uint8 RGB images with one quality value in [0, 1] each."""

    name: str

    def score(self, images: np.ndarray) -> np.ndarray: ...


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"Expected images of shape (N, H, W, 3) and dtype uint8, got {images.shape} {images.dtype}.")


def clip_iqa_probability(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """(N, D) image embeddings and (2, D) prompt embeddings (good, bad) → (N,) P(good) in [0, 1].

    Embeddings need not be normalized; the logits are `logit_scale` × cosine similarity.
    """
    image = F.normalize(image_embeds.float(), dim=-1)
    text = F.normalize(text_embeds.float(), dim=-1)
    logits = logit_scale * image @ text.T  # (N, 2)
    return logits.softmax(dim=-1)[:, 0]


def _pooled(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipIqaScorer:
    """CLIP-IQA on any `transformers.CLIPModel` (OpenAI CLIP, the mini world's CLIP, a tiny random one).

    Args:
        model: the CLIP model; its dtype and device are used as they are.
        tokenizer: a CLIP tokenizer; default the package's offline CLIP BPE tokenizer (the vocabulary
            every OpenAI CLIP shares).
        image_size: input side of the vision tower; default `model.config.vision_config.image_size`.
        mean, std: per-channel normalization of pixels in [0, 1]; default OpenAI CLIP's.
        prompts: the (good, bad) antonym pair.
        logit_scale: softmax temperature; default the model's `logit_scale.exp()`, at most 100.
        batch_size: images per forward pass.
        name: stored with each score so a set records which scorer made it.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        image_size: int | None = None,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        prompts: tuple[str, str] = IQA_PROMPTS,
        logit_scale: float | None = None,
        batch_size: int = 32,
        name: str = "clipiqa",
    ) -> None:
        if len(prompts) != 2:
            raise ValueError(f"CLIP-IQA needs a (good, bad) prompt pair, got {prompts!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1.")
        if tokenizer is None:
            from groundiff.sd.tokenizer import load_clip_tokenizer

            tokenizer = load_clip_tokenizer()
        self.model = model.eval()
        self.image_size = image_size or int(model.config.vision_config.image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.batch_size = batch_size
        self.name = name
        if logit_scale is None:
            logit_scale = min(model.logit_scale.detach().exp().item(), MAX_LOGIT_SCALE)
        self.logit_scale = logit_scale
        max_length = int(model.config.text_config.max_position_embeddings)
        tokens = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        param = next(model.parameters())
        with torch.no_grad():
            text = model.get_text_features(
                input_ids=tokens.input_ids.to(param.device), attention_mask=tokens.attention_mask.to(param.device)
            )
        self.text_embeds = _pooled(text).float()  # (2, D)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 in [0, 255] → (N, 3, S, S) float32 normalized pixels, S = `image_size`.

        Runs on the model's device. The shorter side is resized to S (bicubic, antialiased), then the
        centre is cropped.
        """
        _check_images(images)
        device = next(self.model.parameters()).device
        pixels = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W) in [0, 1]
        height, width = pixels.shape[-2:]
        size = self.image_size
        if min(height, width) != size:
            scale = size / min(height, width)
            new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
            pixels = F.interpolate(pixels, size=new_size, mode="bicubic", antialias=True, align_corners=False)
            pixels = pixels.clamp(0, 1)
        top = (pixels.shape[-2] - size) // 2
        left = (pixels.shape[-1] - size) // 2
        pixels = pixels[..., top : top + size, left : left + size]  # (N, 3, S, S)
        return (pixels - self.mean.to(device)) / self.std.to(device)

    @torch.no_grad()
    def score(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB in [0, 255] → (N,) float32 P("Good photo.") in [0, 1]."""
        _check_images(images)
        param = next(self.model.parameters())
        scores = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.preprocess(images[start : start + self.batch_size]).to(param.dtype)
            image_embeds = _pooled(self.model.get_image_features(pixel_values=pixels))  # (B, D)
            text_embeds = self.text_embeds.to(image_embeds.device)
            scores.append(clip_iqa_probability(image_embeds, text_embeds, self.logit_scale).cpu())
        if not scores:
            return np.zeros(0, dtype=np.float32)
        return torch.cat(scores).numpy().astype(np.float32)


class PyiqaScorer:
    """pyiqa's `clipiqa+` (CLIP-IQA with learned prompts), for users who installed pyiqa themselves."""

    def __init__(self, metric: str = "clipiqa+", *, device: str = "cpu", batch_size: int = 32) -> None:
        try:
            import pyiqa
        except ImportError as err:
            raise ImportError(
                f"The scorer {metric!r} needs pyiqa, which is not installed. Either `pip install pyiqa` (large: "
                "~1.2 GB of dependencies, and its weights must be downloaded once), or use the built-in scorer: "
                "--scorer openai/clip-vit-base-patch32 (or any CLIPModel folder), miniworld, or none."
            ) from err
        self.metric = pyiqa.create_metric(metric, device=device, as_loss=False)
        self.device = device
        self.batch_size = batch_size
        self.name = f"pyiqa:{metric}"

    @torch.no_grad()
    def score(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB in [0, 255] → (N,) float32 scores (in [0, 1] for clipiqa+)."""
        _check_images(images)
        scores = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(images[start : start + self.batch_size]).to(self.device)
            scores.append(self.metric(batch.permute(0, 3, 1, 2).float() / 255).reshape(-1).cpu())
        if not scores:
            return np.zeros(0, dtype=np.float32)
        return torch.cat(scores).numpy().astype(np.float32)


def _normalization(folder: Path) -> tuple[Sequence[float], Sequence[float]]:
    """A CLIP folder's (image_mean, image_std) from its preprocessor_config.json, else OpenAI CLIP's."""
    config_file = folder / "preprocessor_config.json"
    if not config_file.is_file():
        return CLIP_MEAN, CLIP_STD
    config = json.loads(config_file.read_text())
    return config.get("image_mean", CLIP_MEAN), config.get("image_std", CLIP_STD)


def _load_clip(name_or_path: str, *, device: str, batch_size: int) -> ClipIqaScorer:
    from transformers import CLIPModel

    path = Path(name_or_path).expanduser()
    looks_like_path = path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path and not path.is_dir():
        raise FileNotFoundError(
            f"Scorer model {name_or_path!r} is not a folder: pass a folder holding a CLIPModel "
            "(config.json + model.safetensors), a Hugging Face hub id like openai/clip-vit-base-patch32, "
            "'miniworld' or 'none'."
        )
    try:
        model = CLIPModel.from_pretrained(str(path) if looks_like_path else name_or_path)
    except OSError as err:
        raise OSError(
            f"Could not load a CLIPModel from {name_or_path!r}: {err}. If it is a hub id, download it once "
            f"with network (`huggingface-cli download {name_or_path}`) so that it is in the Hugging Face cache, "
            "or pass a local folder; use --scorer none to skip quality scores."
        ) from err
    mean, std = _normalization(path) if looks_like_path else (CLIP_MEAN, CLIP_STD)
    return ClipIqaScorer(model.to(device), mean=mean, std=std, batch_size=batch_size, name=name_or_path)


def load_scorer(name_or_path: str, *, device: str = "cpu", batch_size: int = 32) -> Scorer | None:
    """A quality scorer by name, as `--scorer` names it.

    - `none`: no scores (returns None).
    - a world's name: its own scorer (`miniworld`: CLIP-IQA on the mini world's shipped CLIP).
    - `clipiqa+`: pyiqa's CLIP-IQA+ (only if pyiqa is installed).
    - anything else: CLIP-IQA on the CLIPModel in that local folder or hub id (offline: from the cache).
    """
    if name_or_path == "none":
        return None
    if name_or_path == "clipiqa+":
        return PyiqaScorer(name_or_path, device=device, batch_size=batch_size)
    world = get_world(name_or_path)
    if world is not None:
        return world.scorer(device=device, batch_size=batch_size) if world.scorer is not None else None
    return _load_clip(name_or_path, device=device, batch_size=batch_size)

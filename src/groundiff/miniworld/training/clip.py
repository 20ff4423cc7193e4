"""The tiny CLIP: contrastive on renders and their captions, plus CLIP-IQA ("Good photo." / "Bad photo." on
clean and degraded renders)."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from groundiff.miniworld import models
from groundiff.miniworld.renderer import RenderedSet
from groundiff.miniworld.training import common
from groundiff.miniworld.vocabulary import CLASSES, make_caption

log = logging.getLogger(__name__)


IQA_PROMPTS = ("Good photo.", "Bad photo.")


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A "bad photo" version of a (H, W, 3) uint8 render: one or two of blur, noise, JPEG, pixelation, low contrast."""
    pil = Image.fromarray(image)
    size = image.shape[0]
    for kind in rng.choice(5, size=int(rng.integers(1, 3)), replace=False):
        if kind == 0:
            pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.2, 2.5))))
        elif kind == 1:
            noisy = np.asarray(pil, dtype=np.float32) + rng.normal(0, rng.uniform(25, 60), (size, size, 3))
            pil = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        elif kind == 2:
            buffer = io.BytesIO()
            pil.save(buffer, format="JPEG", quality=int(rng.integers(3, 12)))
            pil = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        elif kind == 3:
            small = int(rng.integers(10, 20))
            pil = pil.resize((small, small), Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.NEAREST)
        else:
            flat = np.asarray(pil, dtype=np.float32) * rng.uniform(0.15, 0.35) + rng.uniform(20, 150)
            pil = Image.fromarray(np.clip(flat, 0, 255).astype(np.uint8))
    return np.asarray(pil)


def _image_features(clip: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → (B, D) projected CLIP image embeddings (transformers 4 and 5 alike)."""
    return clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)


def _text_features(clip: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) token ids → (B, D) projected CLIP text embeddings (pooled at the first end token)."""
    return clip.text_projection(clip.text_model(input_ids=input_ids).pooler_output)


def train_clip(config: common.TrainConfig) -> None:
    """Contrastive CLIP on (render, caption) with multi-positive targets (same class pair), plus CLIP-IQA."""
    data, held_out = common.train_set(config), common.eval_set(config)
    torch.manual_seed(config.seed)
    clip = models.build_clip()
    optimizer = torch.optim.AdamW(clip.parameters(), lr=config.learning_rate, weight_decay=0.05)
    assert config.batch_size is not None
    caption_tokens = common.tokenize(data.captions(), 16)  # (N, 16): captions are ≤ 16 tokens
    pair_keys = np.sort(data.classes, axis=1) @ np.array([len(CLASSES), 1])  # unordered pair id per scene
    iqa_tokens = common.tokenize(IQA_PROMPTS, 16)

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = common.batch_indices(config.seed, step, len(data.images), config.batch)
        rng = np.random.default_rng([config.seed, step, 1])
        n_iqa = min(32, len(idx)) // 2 * 2  # half clean, half degraded
        bad = np.stack([degrade(img, rng) for img in data.images[idx[: n_iqa // 2]]])
        images = common.images_to_tensor(np.concatenate([data.images[idx], bad]))  # (B + 16, 3, H, W)
        image_emb = nn.functional.normalize(_image_features(clip, images), dim=-1)
        texts = torch.cat([caption_tokens[idx], iqa_tokens])
        text_emb = nn.functional.normalize(_text_features(clip, texts), dim=-1)
        scale = clip.logit_scale.exp().clamp(max=100)
        b = len(idx)
        logits = scale * image_emb[:b] @ text_emb[:b].T  # (B, B)
        same = torch.from_numpy(pair_keys[idx][:, None] == pair_keys[idx][None, :]).float()
        targets = same / same.sum(dim=1, keepdim=True)
        contrastive = 0.5 * (
            nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets)
        )
        iqa_images = torch.cat([image_emb[n_iqa // 2 : n_iqa], image_emb[b:]])  # 16 clean, 16 degraded
        iqa_logits = scale * iqa_images @ text_emb[b:].T  # (32, 2)
        iqa_targets = torch.arange(n_iqa) // (n_iqa // 2)  # 0 = good, 1 = bad
        iqa = nn.functional.cross_entropy(iqa_logits, iqa_targets)
        return {"loss": contrastive + 0.5 * iqa, "contrastive": contrastive, "iqa": iqa}

    def evaluate() -> dict[str, float]:
        clip.eval()
        metrics = evaluate_clip(clip, held_out, count=500)
        clip.train()
        return metrics

    clip.train()
    common.run_loop(config, clip, optimizer, loss_fn, evaluate=evaluate)


@torch.no_grad()
def evaluate_clip(clip: nn.Module, held_out: RenderedSet, *, count: int = 500) -> dict[str, float]:
    """Zero-shot accuracy of naming both classes (among all 190 pairs) and CLIP-IQA good/bad accuracy."""
    pairs = [(i, j) for i in range(len(CLASSES)) for j in range(len(CLASSES)) if i != j]
    captions = [make_caption([CLASSES[i], CLASSES[j]]) for i, j in pairs]
    text = nn.functional.normalize(_text_features(clip, common.tokenize(captions, 16)), dim=-1)
    images = held_out.images[:count]
    image = nn.functional.normalize(_image_features(clip, common.images_to_tensor(images)), dim=-1)
    best = (image @ text.T).argmax(dim=1).numpy()  # (count,)
    predicted = np.sort(np.array(pairs)[best], axis=1)
    pair_acc = float((predicted == np.sort(held_out.classes[:count], axis=1)).all(axis=1).mean())
    rng = np.random.default_rng(0)
    bad = np.stack([degrade(img, rng) for img in images[:200]])
    iqa_text = nn.functional.normalize(_text_features(clip, common.tokenize(IQA_PROMPTS, 16)), dim=-1)
    both = common.images_to_tensor(np.concatenate([images[:200], bad]))
    iqa_image = nn.functional.normalize(_image_features(clip, both), dim=-1)
    good = (iqa_image @ iqa_text.T).argmax(dim=1).numpy() == 0
    iqa_acc = float(np.concatenate([good[:200], ~good[200:]]).mean())
    return {"pair_accuracy": round(pair_acc, 4), "iqa_accuracy": round(iqa_acc, 4)}

"""Training of the mini world's parts on CPU: `python -m groundiff.miniworld.train <part> [--resume] [--minutes M]`.

Parts, in the order they depend on each other:
    vae      4× AutoencoderKL on renders (L1 + MSE + KL).
    clip     tiny CLIP, contrastive on renders and their captions, plus CLIP-IQA ("Good photo." /
             "Bad photo." on clean and degraded renders).
    unet     UNet2DConditionModel on VAE latents, conditioned on the frozen CLIP text tower
             (captions dropped 10% of the time for classifier-free guidance), EMA of the weights.
    labeler  segmentation net over background + 20 classes on renders.
    publish  assemble the shipped weights (diffusers pipeline folder, CLIP, labeler) from the runs.

Every part is seeded (batch i is a function of the seed and i only), logs loss and steps/s, writes
a resumable safetensors checkpoint every few minutes and stops after --steps or --minutes.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from groundiff.miniworld import models
from groundiff.miniworld.checkpoint import load_training_state, save_training_state
from groundiff.miniworld.datasets import EVAL_FIRST_SEED, TRAIN_FIRST_SEED, cached_render_set
from groundiff.miniworld.renderer import RenderedSet
from groundiff.miniworld.vocabulary import CLASSES, make_caption
from groundiff.miniworld.weights import COMPACT_UNET_CHECKPOINT, PACKAGE_DIR, PIPELINE_DIR, WEIGHTS_DIR

log = logging.getLogger(__name__)

PARTS = ("vae", "clip", "unet", "labeler", "publish")
DEFAULT_STEPS = {"vae": 3000, "clip": 3000, "unet": 200_000, "labeler": 3000}
DEFAULT_BATCH = {"vae": 32, "clip": 128, "unet": 64, "labeler": 32}
DEFAULT_LR = {"vae": 5e-4, "clip": 1e-3, "unet": 3e-4, "labeler": 2e-3}
TRAIN_SCENES = 60_000
LABELER_WIDTH = 32
UNET_SCENES = 40_000  # renders encoded once into latents for the U-Net
EVAL_SCENES = 2_000
IQA_PROMPTS = ("Good photo.", "Bad photo.")


@dataclass
class TrainConfig:
    """One training run of one part.

    Attributes:
        part: one of PARTS.
        run_dir: checkpoints, logs and the render cache live here (`<run_dir>/<part>/`).
        steps: stop after this many optimizer steps in total (across resumes).
        minutes: stop after this many minutes of this invocation (a checkpoint is written first).
        batch_size, lr: optimizer settings.
        resume: continue from `<run_dir>/<part>/checkpoint.safetensors`.
        seed: batch i draws its samples from (seed, i), so resumed runs see the same batches.
        threads: torch CPU threads.
        checkpoint_minutes: minutes between checkpoints.
    """

    part: str
    run_dir: Path = Path("runs/miniworld")
    steps: int | None = None
    minutes: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    resume: bool = False
    seed: int = 0
    threads: int = 1  # 2 threads beside other jobs on 2 cores ran 4-10x slower here
    checkpoint_minutes: float = 4.0

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"Unknown part {self.part!r}; choose one of {', '.join(PARTS)}.")
        self.run_dir = Path(self.run_dir)
        if self.part != "publish":
            self.steps = self.steps or DEFAULT_STEPS[self.part]
            self.batch_size = self.batch_size or DEFAULT_BATCH[self.part]
            self.lr = self.lr or DEFAULT_LR[self.part]

    @property
    def batch(self) -> int:
        """The resolved batch size (training parts only)."""
        if self.batch_size is None:
            raise ValueError(f"Part {self.part!r} trains nothing and has no batch size.")
        return self.batch_size

    @property
    def learning_rate(self) -> float:
        """The resolved learning rate (training parts only)."""
        if self.lr is None:
            raise ValueError(f"Part {self.part!r} trains nothing and has no learning rate.")
        return self.lr

    @property
    def part_dir(self) -> Path:
        return self.run_dir / self.part

    @property
    def checkpoint_path(self) -> Path:
        return self.part_dir / "checkpoint.safetensors"


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 in [0, 255] → (B, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def batch_indices(seed: int, step: int, count: int, batch_size: int) -> np.ndarray:
    return np.random.default_rng([seed, step]).integers(0, count, batch_size)


def _run_loop(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[int], dict[str, torch.Tensor]],
    *,
    ema: nn.Module | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
) -> int:
    """The shared optimizer loop: resume, step, log, checkpoint, stop on steps or minutes. Returns the last step."""
    step = 0
    if config.resume and config.checkpoint_path.exists():
        step = load_training_state(config.checkpoint_path, model, optimizer, ema)
        log.info("%s: resumed from %s at step %d", config.part, config.checkpoint_path, step)
    start = last_log = last_ckpt = time.time()
    steps_since_log = 0
    warmup = 200
    base_lr = config.lr
    assert config.steps is not None and base_lr is not None
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = base_lr * min(1.0, (step + 1) / warmup)
        losses = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        steps_since_log += 1
        if ema is not None:
            decay = min(0.999, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
        now = time.time()
        if now - last_log > 60 or step == config.steps:
            parts = " ".join(f"{k} {v.item():.4f}" for k, v in losses.items())
            log.info("%s step %d %s  %.2f steps/s", config.part, step, parts, steps_since_log / (now - last_log))
            last_log, steps_since_log = now, 0
        out_of_time = config.minutes is not None and now - start > 60 * config.minutes
        if now - last_ckpt > 60 * config.checkpoint_minutes or out_of_time or step == config.steps:
            save_training_state(config.checkpoint_path, model, optimizer, step, ema)
            log.info("%s: checkpoint at step %d (%.1f min this run)", config.part, step, (now - start) / 60)
            last_ckpt = now
            if evaluate is not None:
                log.info("%s eval at step %d: %s", config.part, step, evaluate())
        if out_of_time:
            break
    return step


def _train_set(config: TrainConfig) -> RenderedSet:
    return cached_render_set(config.run_dir / "cache", TRAIN_FIRST_SEED, TRAIN_SCENES)


def _eval_set(config: TrainConfig) -> RenderedSet:
    return cached_render_set(config.run_dir / "cache", EVAL_FIRST_SEED, EVAL_SCENES)


# ----------------------------------------------------------------------------------------- VAE
def train_vae(config: TrainConfig) -> None:
    """4× KL autoencoder: L1 + MSE reconstruction with object pixels weighted 4×, KL weight 1e-6."""
    data, held_out = _train_set(config), _eval_set(config)
    torch.manual_seed(config.seed)
    vae = models.build_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
    assert config.batch_size is not None

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = batch_indices(config.seed, step, len(data.images), config.batch)
        x = images_to_tensor(data.images[idx])  # (B, 3, H, W)
        weight = 1.0 + 3.0 * torch.from_numpy(data.labels[idx] > 0).float()[:, None]  # (B, 1, H, W)
        posterior = vae.encode(x).latent_dist
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        recon = vae.decode(posterior.sample(generator)).sample
        l1 = (weight * (recon - x).abs()).mean()
        mse = (weight * (recon - x) ** 2).mean()
        kl = posterior.kl().mean()
        return {"loss": l1 + mse + 1e-6 * kl, "l1": l1, "kl": kl}

    def evaluate() -> dict[str, float]:
        vae.eval()
        with torch.no_grad():
            x = images_to_tensor(held_out.images[:256])
            recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        vae.train()
        mse = ((recon - x) / 2).pow(2).mean().item()
        return {"psnr": round(10 * math.log10(1 / mse), 2)}

    vae.train()
    _run_loop(config, vae, optimizer, loss_fn, evaluate=evaluate)


# ---------------------------------------------------------------------------------------- CLIP
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


def _tokenize(texts: Sequence[str], length: int) -> torch.Tensor:
    from groundiff.sd.tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    return tokenizer(
        list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).input_ids


def _image_features(clip: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → (B, D) projected CLIP image embeddings (transformers 4 and 5 alike)."""
    return clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)


def _text_features(clip: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) token ids → (B, D) projected CLIP text embeddings (pooled at the first end token)."""
    return clip.text_projection(clip.text_model(input_ids=input_ids).pooler_output)


def train_clip(config: TrainConfig) -> None:
    """Contrastive CLIP on (render, caption) with multi-positive targets (same class pair), plus CLIP-IQA."""
    data, held_out = _train_set(config), _eval_set(config)
    torch.manual_seed(config.seed)
    clip = models.build_clip()
    optimizer = torch.optim.AdamW(clip.parameters(), lr=config.learning_rate, weight_decay=0.05)
    assert config.batch_size is not None
    caption_tokens = _tokenize(data.captions(), 16)  # (N, 16): captions are ≤ 16 tokens
    pair_keys = np.sort(data.classes, axis=1) @ np.array([len(CLASSES), 1])  # unordered pair id per scene
    iqa_tokens = _tokenize(IQA_PROMPTS, 16)

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = batch_indices(config.seed, step, len(data.images), config.batch)
        rng = np.random.default_rng([config.seed, step, 1])
        n_iqa = min(32, len(idx)) // 2 * 2  # half clean, half degraded
        bad = np.stack([degrade(img, rng) for img in data.images[idx[: n_iqa // 2]]])
        images = images_to_tensor(np.concatenate([data.images[idx], bad]))  # (B + 16, 3, H, W)
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
    _run_loop(config, clip, optimizer, loss_fn, evaluate=evaluate)


@torch.no_grad()
def evaluate_clip(clip: nn.Module, held_out: RenderedSet, *, count: int = 500) -> dict[str, float]:
    """Zero-shot accuracy of naming both classes (among all 190 pairs) and CLIP-IQA good/bad accuracy."""
    pairs = [(i, j) for i in range(len(CLASSES)) for j in range(len(CLASSES)) if i != j]
    captions = [make_caption([CLASSES[i], CLASSES[j]]) for i, j in pairs]
    text = nn.functional.normalize(_text_features(clip, _tokenize(captions, 16)), dim=-1)
    images = held_out.images[:count]
    image = nn.functional.normalize(_image_features(clip, images_to_tensor(images)), dim=-1)
    best = (image @ text.T).argmax(dim=1).numpy()  # (count,)
    predicted = np.sort(np.array(pairs)[best], axis=1)
    pair_acc = float((predicted == np.sort(held_out.classes[:count], axis=1)).all(axis=1).mean())
    rng = np.random.default_rng(0)
    bad = np.stack([degrade(img, rng) for img in images[:200]])
    iqa_text = nn.functional.normalize(_text_features(clip, _tokenize(IQA_PROMPTS, 16)), dim=-1)
    both = images_to_tensor(np.concatenate([images[:200], bad]))
    iqa_image = nn.functional.normalize(_image_features(clip, both), dim=-1)
    good = (iqa_image @ iqa_text.T).argmax(dim=1).numpy() == 0
    iqa_acc = float(np.concatenate([good[:200], ~good[200:]]).mean())
    return {"pair_accuracy": round(pair_acc, 4), "iqa_accuracy": round(iqa_acc, 4)}


# ---------------------------------------------------------------------------------------- U-Net
def _pair_table_index(classes: np.ndarray) -> np.ndarray:
    """(N, 2) ordered class indices → (N,) row in the caption-embedding table of all ordered pairs."""
    return classes[:, 0] * len(CLASSES) + classes[:, 1]


@torch.no_grad()
def caption_embedding_table(pipeline_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen text-encoder states of every two-class caption and of the empty caption.

    Returns (table, empty): table (20 * 20, 77, D) indexed by `x * 20 + y` for "a photograph of a
    {x} and a {y}" (rows with x == y are unused), empty (77, D) for "" (classifier-free guidance).
    Tokenized exactly as `StableDiffusionPipeline.encode_prompt` does (padded to 77, no mask).
    """
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder", dtype=torch.float32).eval()
    captions = [make_caption([x, y]) for x in CLASSES for y in CLASSES] + [""]
    states = text_encoder(_tokenize(captions, 77)).last_hidden_state  # (401, 77, D)
    return states[:-1], states[-1]


@torch.no_grad()
def encode_latents(pipeline_dir: Path, images: np.ndarray, *, batch_size: int = 250) -> torch.Tensor:
    """(N, H, W, 3) uint8 renders → (N, 4, H/4, W/4) posterior means of the shipped VAE × its scaling factor."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(pipeline_dir / "vae", dtype=torch.float32).eval()
    chunks = [
        vae.encode(images_to_tensor(images[i : i + batch_size])).latent_dist.mean
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) * vae.config.scaling_factor


def train_unet(config: TrainConfig, pipeline_dir: Path, compact_resume: Path) -> None:
    """ε-prediction on latents of the shipped VAE, conditioned on the shipped (frozen) text encoder.

    Each sample's caption names its two classes in a random order; 10% of captions are replaced by
    "" so that classifier-free guidance works. The EMA of the weights (decay 0.999) is what ships.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel

    data = _train_set(config)
    latent_path = config.part_dir / f"latents_{UNET_SCENES}.safetensors"
    if latent_path.exists():
        latents = load_file(str(latent_path))["latents"]
    else:
        log.info("unet: encoding %d renders with the shipped VAE", UNET_SCENES)
        latents = encode_latents(pipeline_dir, data.images[:UNET_SCENES])
        config.part_dir.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.contiguous()}, str(latent_path))
    log.info("unet: latents %s, std %.3f", tuple(latents.shape), latents.std().item())
    table, empty = caption_embedding_table(pipeline_dir)
    noise_schedule = DDPMScheduler.from_pretrained(pipeline_dir / "scheduler")
    torch.manual_seed(config.seed)
    unet = models.build_unet()
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.01)
    if config.resume and not config.checkpoint_path.exists() and compact_resume.exists():
        step = load_training_state(compact_resume, unet)
        shipped = UNet2DConditionModel.from_pretrained(pipeline_dir / "unet", dtype=torch.float32)
        ema.load_state_dict(shipped.state_dict())
        save_training_state(config.checkpoint_path, unet, optimizer, step, ema)
        log.info("unet: seeded the run from the committed checkpoint %s (step %d)", compact_resume, step)
    assert config.batch_size is not None
    classes = torch.from_numpy(data.classes[:UNET_SCENES])

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(batch_indices(config.seed, step, UNET_SCENES, config.batch))
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        x0 = latents[idx]  # (B, 4, h, w)
        pair = classes[idx]  # (B, 2)
        swap = torch.rand(len(idx), generator=generator) < 0.5
        pair = torch.where(swap[:, None], pair.flip(1), pair)
        context = table[_pair_table_index(pair.numpy())]  # (B, 77, D)
        drop = torch.rand(len(idx), generator=generator) < 0.1
        context = torch.where(drop[:, None, None], empty[None], context)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(idx),), generator=generator)
        noisy = noise_schedule.add_noise(x0, noise, t)
        predicted = unet(noisy, t, encoder_hidden_states=context).sample
        mse = nn.functional.mse_loss(predicted, noise)
        return {"loss": mse}

    unet.train()
    _run_loop(config, unet, optimizer, loss_fn, ema=ema)


# -------------------------------------------------------------------------------------- labeler
def augment_like_generation(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild blur, noise and colour shifts, so that the labeler also reads decoded (generated) images."""
    out = []
    for image in images:
        pil = Image.fromarray(image)
        if rng.random() < 0.5:
            pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
        pixels = np.asarray(pil, dtype=np.float32) * rng.uniform(0.9, 1.1, 3) + rng.uniform(-12, 12, 3)
        pixels += rng.normal(0, rng.uniform(0, 6), pixels.shape)
        out.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return np.stack(out)


def train_labeler(config: TrainConfig) -> None:
    """Cross-entropy segmentation over background + 20 classes on renders with mild augmentation."""
    from groundiff.miniworld.labeler import MiniWorldLabeler, class_miou

    data, held_out = _train_set(config), _eval_set(config)
    torch.manual_seed(config.seed)
    net = models.SegmentationNet(width=LABELER_WIDTH)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    assert config.batch_size is not None

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = batch_indices(config.seed, step, len(data.images), config.batch)
        rng = np.random.default_rng([config.seed, step, 2])
        x = images_to_tensor(augment_like_generation(data.images[idx], rng))
        if rng.random() < 0.5:
            x, target = x.flip(3), torch.from_numpy(data.labels[idx]).long().flip(2)
        else:
            target = torch.from_numpy(data.labels[idx]).long()
        return {"loss": nn.functional.cross_entropy(net(x), target)}

    def evaluate() -> dict[str, float]:
        predicted, _ = MiniWorldLabeler(net).predict(held_out.images[:500])
        net.train()
        return {"miou": round(class_miou(predicted, held_out.labels[:500]), 2)}

    net.train()
    _run_loop(config, net, optimizer, loss_fn, evaluate=evaluate)


# -------------------------------------------------------------------------------------- publish
def _run_weights(config: TrainConfig, part: str, prefix: str = "model.") -> dict[str, torch.Tensor]:
    path = config.run_dir / part / "checkpoint.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"No {part} checkpoint at {path}; train it first: python -m groundiff.miniworld.train {part}."
        )
    return {k[len(prefix) :]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}


def _fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.float16).contiguous() for k, v in state.items()}


def publish(config: TrainConfig, parts: Sequence[str], weights_dir: Path) -> None:
    """Write the shipped weights of `parts` (vae, clip, unet, labeler) from their run checkpoints, in fp16.

    The pipeline folder is rewritten as a whole (components not published now are read back from it);
    the U-Net ships its EMA weights, and its raw weights go to a compact fp16 resume checkpoint.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from groundiff.sd.tokenizer import load_clip_tokenizer

    pipeline_dir = weights_dir / "pipeline"
    components: dict[str, nn.Module] = {}
    if "vae" in parts:
        vae = models.build_vae()
        vae.load_state_dict(_run_weights(config, "vae"))
        vae.eval()
        with torch.no_grad():
            sample = images_to_tensor(_train_set(config).images[:2000])
            std = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in sample.split(250)]).std().item()
        vae.register_to_config(scaling_factor=round(1.0 / std, 5))
        log.info("publish: VAE latent std %.4f → scaling_factor %.5f", std, 1.0 / std)
        components["vae"] = vae
    if "clip" in parts:
        clip = models.build_clip()
        clip.load_state_dict(_run_weights(config, "clip"))
        components["text_encoder"] = copy.deepcopy(clip.text_model)  # a CLIPTextModel
        clip_dir = weights_dir / "clip"
        clip_dir.mkdir(parents=True, exist_ok=True)
        clip.config.save_pretrained(str(clip_dir))
        rest = {k: v for k, v in clip.state_dict().items() if not k.startswith("text_model.")}
        save_file(_fp16(rest), str(clip_dir / "model.safetensors"))
    if "unet" in parts:
        unet = models.build_unet()
        unet_run = config.run_dir / "unet" / "checkpoint.safetensors"
        if unet_run.exists():
            unet.load_state_dict(_run_weights(config, "unet", "ema."))
            with safe_open(str(unet_run), framework="pt") as handle:
                step = handle.metadata()["step"]
            compact = PACKAGE_DIR / "checkpoints" / "unet_resume.safetensors"
            compact.parent.mkdir(parents=True, exist_ok=True)
            save_file(
                {f"model.{k}": v for k, v in _fp16(_run_weights(config, "unet")).items()},
                str(compact),
                metadata={"step": step, "param_groups": "[]"},
            )
            log.info("publish: U-Net EMA and compact resume checkpoint at step %s", step)
        components["unet"] = unet
    if components:
        existing = {}
        if (pipeline_dir / "model_index.json").exists():
            existing = {
                "vae": lambda: AutoencoderKL.from_pretrained(pipeline_dir / "vae"),
                "text_encoder": lambda: CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder"),
                "unet": lambda: UNet2DConditionModel.from_pretrained(pipeline_dir / "unet"),
            }
        for name in ("vae", "text_encoder", "unet"):
            if name not in components:
                if name not in existing:
                    raise FileNotFoundError(f"Publishing the pipeline needs a {name}: publish it too (--parts).")
                components[name] = existing[name]().float()
        pipe = StableDiffusionPipeline(
            **components,
            tokenizer=load_clip_tokenizer(),
            scheduler=models.build_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.to(torch.float16).save_pretrained(str(pipeline_dir), safe_serialization=True)
    if "labeler" in parts:
        labeler_dir = weights_dir / "labeler"
        labeler_dir.mkdir(parents=True, exist_ok=True)
        (labeler_dir / "config.json").write_text(
            json.dumps({"width": LABELER_WIDTH, "classes": list(CLASSES)}, indent=2)
        )
        save_file(_fp16(_run_weights(config, "labeler")), str(labeler_dir / "model.safetensors"))
    log.info("publish: wrote %s to %s", ", ".join(parts), weights_dir)


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m groundiff.miniworld.train", description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=PARTS)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/miniworld"))
    parser.add_argument("--steps", type=int, default=None, help="total optimizer steps (default per part)")
    parser.add_argument("--minutes", type=float, default=None, help="stop this invocation after M minutes")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the part's checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 when the machine is shared)")
    parser.add_argument("--checkpoint-minutes", type=float, default=4.0)
    parser.add_argument("--weights-dir", type=Path, default=None, help="publish: target folder (default: shipped)")
    parser.add_argument("--parts", default="vae,clip,unet,labeler", help="publish: comma-separated parts")
    parser.add_argument("--pipeline-dir", type=Path, default=None, help="unet: VAE and text encoder (default: shipped)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    config = TrainConfig(
        part=args.part,
        run_dir=args.run_dir,
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        resume=args.resume,
        seed=args.seed,
        threads=args.threads,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    if config.part == "publish":
        publish(config, args.parts.split(","), args.weights_dir or WEIGHTS_DIR)
    elif config.part == "unet":
        train_unet(config, args.pipeline_dir or PIPELINE_DIR, COMPACT_UNET_CHECKPOINT)
    else:
        {"vae": train_vae, "clip": train_clip, "labeler": train_labeler}[config.part](config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

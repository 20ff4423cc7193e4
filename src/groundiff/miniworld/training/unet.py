"""The U-Nets (every version in `groundiff.miniworld.versions`) on VAE latents, conditioned on the frozen
CLIP text tower (captions dropped 10 % of the time for classifier-free guidance), with an EMA of the weights."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from groundiff.miniworld import models
from groundiff.miniworld.checkpoint import save_training_state
from groundiff.miniworld.datasets import TRAIN_FIRST_SEED, cached_render_set
from groundiff.miniworld.training import common
from groundiff.miniworld.versions import UnetVersion, version_named
from groundiff.miniworld.vocabulary import CLASSES, make_caption

log = logging.getLogger(__name__)


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
    states = text_encoder(common.tokenize(captions, 77)).last_hidden_state  # (401, 77, D)
    return states[:-1], states[-1]


@torch.no_grad()
def encode_latents(pipeline_dir: Path, images: np.ndarray, *, batch_size: int = 250) -> torch.Tensor:
    """(N, H, W, 3) uint8 renders → (N, 4, H/4, W/4) posterior means of the shipped VAE × its scaling factor."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(pipeline_dir / "vae", dtype=torch.float32).eval()
    chunks = [
        vae.encode(common.images_to_tensor(images[i : i + batch_size])).latent_dist.mean
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) * vae.config.scaling_factor


def _seed_from_published(
    version: UnetVersion, weights_dir: Path, checkpoints_dir: Path, unet: nn.Module, ema: nn.Module
) -> int:
    """Load a published U-Net into both the trained weights and their EMA; return the step to go on from.

    Continuing a version starts from its own shipped EMA at its recorded step; a fine-tune's first run
    starts from the shipped weights of the version it fine-tunes, at step 0. AdamW's moments start afresh.
    """
    from diffusers import UNet2DConditionModel

    record = checkpoints_dir / f"{version.part}.json"
    if record.exists():
        source, step = version, int(json.loads(record.read_text())["step"])
    elif version.start is not None:
        source, step = version_named(version.start), 0
    else:
        return 0
    folder = weights_dir / source.folder
    shipped = UNet2DConditionModel.from_pretrained(folder, dtype=torch.float32).state_dict()
    unet.load_state_dict(shipped)
    ema.load_state_dict(shipped)
    log.info("%s: seeded the run from the shipped %s (%s) at step %d", version.part, source.model, folder, step)
    return step


def train_unet(config: common.TrainConfig, weights_dir: Path, checkpoints_dir: Path, pipeline_dir: Path) -> None:
    """Train the U-Net version of `config.part` on latents of the shipped VAE, text from the frozen encoder.

    ε- or v-prediction as the version says. Each sample's caption names its two classes in a random
    order; 10% of captions are replaced by "" so that classifier-free guidance works. The EMA of the
    weights (decay 0.999) is what ships. With `--resume` and no run checkpoint, the run is seeded from
    the published weights (see `_seed_from_published`).
    """
    from diffusers import DDPMScheduler

    version = version_named(config.part)
    data = cached_render_set(config.run_dir / "cache", TRAIN_FIRST_SEED, version.scenes, style=version.style)
    latent_path = config.part_dir / f"latents_{version.style}_{version.scenes}.safetensors"
    if latent_path.exists():
        latents = load_file(str(latent_path))["latents"]
    else:
        log.info("%s: encoding %d %s renders with the shipped VAE", config.part, version.scenes, version.style)
        latents = encode_latents(pipeline_dir, data.images)
        config.part_dir.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.contiguous()}, str(latent_path))
    log.info("%s: latents %s, std %.3f", config.part, tuple(latents.shape), latents.std().item())
    table, empty = caption_embedding_table(pipeline_dir)
    noise_schedule = DDPMScheduler.from_pretrained(pipeline_dir / "scheduler")
    torch.manual_seed(config.seed)
    unet = models.build_unet(version.architecture)
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.01)
    if config.resume and not config.checkpoint_path.exists():
        step = _seed_from_published(version, weights_dir, checkpoints_dir, unet, ema)
        save_training_state(config.checkpoint_path, unet, optimizer, step, ema)
    assert config.batch_size is not None
    classes = torch.from_numpy(data.classes)
    first_batch_seed = 0 if version.start is None else 1  # a fine-tune sees other batches than its start did

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(common.batch_indices(config.seed + first_batch_seed, step, len(latents), config.batch))
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
        target = noise if version.prediction_type == "epsilon" else noise_schedule.get_velocity(x0, noise, t)
        predicted = unet(noisy, t, encoder_hidden_states=context).sample
        return {"loss": nn.functional.mse_loss(predicted, target)}

    unet.train()
    common.run_loop(config, unet, optimizer, loss_fn, ema=ema)

"""The U-Net on VAE latents, conditioned on the frozen CLIP text tower (captions dropped 10 % of the time
for classifier-free guidance), with an EMA of the weights."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from groundiff.miniworld import models
from groundiff.miniworld.checkpoint import load_training_state, save_training_state
from groundiff.miniworld.training import common
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


def train_unet(config: common.TrainConfig, pipeline_dir: Path, compact_resume: Path) -> None:
    """ε-prediction on latents of the shipped VAE, conditioned on the shipped (frozen) text encoder.

    Each sample's caption names its two classes in a random order; 10% of captions are replaced by
    "" so that classifier-free guidance works. The EMA of the weights (decay 0.999) is what ships.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel

    data = common.train_set(config)
    latent_path = config.part_dir / f"latents_{common.UNET_SCENES}.safetensors"
    if latent_path.exists():
        latents = load_file(str(latent_path))["latents"]
    else:
        log.info("unet: encoding %d renders with the shipped VAE", common.UNET_SCENES)
        latents = encode_latents(pipeline_dir, data.images[: common.UNET_SCENES])
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
    classes = torch.from_numpy(data.classes[: common.UNET_SCENES])

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(common.batch_indices(config.seed, step, common.UNET_SCENES, config.batch))
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
    common.run_loop(config, unet, optimizer, loss_fn, ema=ema)

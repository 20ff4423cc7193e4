"""The mini world's 4x AutoencoderKL, trained on renders (L1 + MSE + KL)."""

from __future__ import annotations

import logging
import math

import torch

from groundiff.miniworld import models
from groundiff.miniworld.training import common

log = logging.getLogger(__name__)


def train_vae(config: common.TrainConfig) -> None:
    """4× KL autoencoder: L1 + MSE reconstruction with object pixels weighted 4×, KL weight 1e-6."""
    data, held_out = common.train_set(config), common.eval_set(config)
    torch.manual_seed(config.seed)
    vae = models.build_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
    assert config.batch_size is not None

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = common.batch_indices(config.seed, step, len(data.images), config.batch)
        x = common.images_to_tensor(data.images[idx])  # (B, 3, H, W)
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
            x = common.images_to_tensor(held_out.images[:256])
            recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        vae.train()
        mse = ((recon - x) / 2).pow(2).mean().item()
        return {"psnr": round(10 * math.log10(1 / mse), 2)}

    vae.train()
    common.run_loop(config, vae, optimizer, loss_fn, evaluate=evaluate)

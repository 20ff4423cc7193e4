"""The labeler: a segmentation net over background + 20 classes, trained on renders."""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from groundiff.miniworld import models
from groundiff.miniworld.training import common

log = logging.getLogger(__name__)


LABELER_WIDTH = 32


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


def train_labeler(config: common.TrainConfig) -> None:
    """Cross-entropy segmentation over background + 20 classes on renders with mild augmentation."""
    from groundiff.miniworld.labeler import MiniWorldLabeler, class_miou

    data, held_out = common.train_set(config), common.eval_set(config)
    torch.manual_seed(config.seed)
    net = models.SegmentationNet(width=LABELER_WIDTH)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    assert config.batch_size is not None

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = common.batch_indices(config.seed, step, len(data.images), config.batch)
        rng = np.random.default_rng([config.seed, step, 2])
        x = common.images_to_tensor(augment_like_generation(data.images[idx], rng))
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
    common.run_loop(config, net, optimizer, loss_fn, evaluate=evaluate)

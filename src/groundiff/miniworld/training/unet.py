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


class CaptionStates:
    """Frozen text-encoder states of the training captions, each naming its scene's classes in a random order.

    Tokenized exactly as `StableDiffusionPipeline.encode_prompt` does (padded to 77, no mask). Pair scenes
    read a table of every two-class caption, computed once, as the first U-Nets were trained; scenes of
    other counts are encoded batch by batch (4 classes have 116,280 ordered captions, too many to tabulate).
    """

    def __init__(self, pipeline_dir: Path, *, pairs_only: bool) -> None:
        from transformers import CLIPTextModel

        self.text_encoder = CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder", dtype=torch.float32).eval()
        pairs = [make_caption([x, y]) for x in CLASSES for y in CLASSES] if pairs_only else []
        states = self.encode([*pairs, ""])  # one batch, as the first U-Nets' table was computed
        self.empty = states[-1]  # (77, D), for classifier-free guidance
        # (20 * 20, 77, D) indexed by `x * 20 + y` for "a photograph of a {x} and a {y}" (x == y unused)
        self.pair_table = states[:-1] if pairs_only else None

    @torch.no_grad()
    def encode(self, captions: list[str]) -> torch.Tensor:
        return self.text_encoder(common.tokenize(captions, 77)).last_hidden_state  # (B, 77, D)

    def __call__(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, K) class indices, -1 where a scene has fewer than K objects → (B, 77, D) caption states."""
        if self.pair_table is not None:
            swap = torch.rand(len(classes), generator=generator) < 0.5
            pair = torch.where(swap[:, None], classes.flip(1), classes)
            return self.pair_table[_pair_table_index(pair.numpy())]
        captions = []
        for row in classes:
            present = row[row >= 0]
            order = present[torch.randperm(len(present), generator=generator)]
            captions.append(make_caption([CLASSES[int(i)] for i in order]))
        return self.encode(captions)


def training_scenes(version: UnetVersion, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A version's training renders (N, H, W, 3) uint8 and their classes (N, K) int64, -1-padded to the most
    objects per scene. Each object count renders its share of the scenes from its own range of seeds."""
    share = version.scenes // len(version.objects)
    parts = [
        cached_render_set(cache_dir, TRAIN_FIRST_SEED + i * share, share, num_objects=n, style=version.style)
        for i, n in enumerate(version.objects)
    ]
    if len(parts) == 1:
        return parts[0].images, parts[0].classes
    widest = max(version.objects)
    classes = [np.pad(p.classes, ((0, 0), (0, widest - p.classes.shape[1])), constant_values=-1) for p in parts]
    return np.concatenate([p.images for p in parts]), np.concatenate(classes)


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

    ε- or v-prediction as the version says. Each sample's caption names its classes in a random order
    (`CaptionStates`); 10% of captions are replaced by "" so that classifier-free guidance works. The EMA of the
    weights (decay 0.999) is what ships. With `--resume` and no run checkpoint, the run is seeded from
    the published weights (see `_seed_from_published`).
    """
    from diffusers import DDPMScheduler

    version = version_named(config.part)
    images, scene_classes = training_scenes(version, config.run_dir / "cache")
    counts = "" if version.objects == (2,) else "_" + "".join(map(str, version.objects))  # pairs keep their names
    latent_path = config.part_dir / f"latents_{version.style}_{version.scenes}{counts}.safetensors"
    if latent_path.exists():
        latents = load_file(str(latent_path))["latents"]
    else:
        log.info("%s: encoding %d %s renders with the shipped VAE", config.part, version.scenes, version.style)
        latents = encode_latents(pipeline_dir, images)
        config.part_dir.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.contiguous()}, str(latent_path))
    log.info("%s: latents %s, std %.3f", config.part, tuple(latents.shape), latents.std().item())
    captions = CaptionStates(pipeline_dir, pairs_only=version.objects == (2,))
    noise_schedule = DDPMScheduler.from_pretrained(pipeline_dir / "scheduler")
    torch.manual_seed(config.seed)
    unet = models.build_unet(version.architecture)
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.01)
    if config.resume and not config.checkpoint_path.exists():
        step = _seed_from_published(version, weights_dir, checkpoints_dir, unet, ema)
        save_training_state(config.checkpoint_path, unet, optimizer, step, ema)
    assert config.batch_size is not None
    classes = torch.from_numpy(scene_classes)
    first_batch_seed = 0 if version.start is None else 1  # a fine-tune sees other batches than its start did

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(common.batch_indices(config.seed + first_batch_seed, step, len(latents), config.batch))
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        x0 = latents[idx]  # (B, 4, h, w)
        context = captions(classes[idx], generator)  # (B, 77, D)
        drop = torch.rand(len(idx), generator=generator) < 0.1
        context = torch.where(drop[:, None, None], captions.empty[None], context)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(idx),), generator=generator)
        noisy = noise_schedule.add_noise(x0, noise, t)
        target = noise if version.prediction_type == "epsilon" else noise_schedule.get_velocity(x0, noise, t)
        predicted = unet(noisy, t, encoder_hidden_states=context).sample
        return {"loss": nn.functional.mse_loss(predicted, target)}

    unet.train()
    common.run_loop(config, unet, optimizer, loss_fn, ema=ema)

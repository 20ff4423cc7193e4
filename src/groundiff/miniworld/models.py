"""Sizes of the mini world's models, assembled in one place from a small registry of configs.

The generator is a Stable Diffusion in miniature: a 4× AutoencoderKL (64×64×3 images ↔ 16×16×4
latents), a CLIP text tower with the real CLIP BPE tokenizer, a UNet2DConditionModel with
cross-attention at its two coarser levels, and SD's DDIM scheduler. The CLIP image tower (a small
ViT) is trained with the text tower and serves CLIP-IQA. The labeler is a small convolutional
segmentation net over background + 20 classes.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from groundiff.miniworld.renderer import IMAGE_SIZE
from groundiff.miniworld.versions import unet_config
from groundiff.miniworld.vocabulary import CLASSES
from groundiff.sd.architectures import sd_ddim_scheduler

LATENT_SIZE = IMAGE_SIZE // 4
TEXT_WIDTH = 64
CLIP_VOCAB_SIZE = 49408


def build_vae() -> AutoencoderKL:
    """4× KL autoencoder: (B, 3, 64, 64) in [-1, 1] ↔ (B, 4, 16, 16) latents."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(24, 48, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def clip_config() -> CLIPConfig:
    """A tiny CLIP: 3-layer 64-wide text tower (real 49,408-token vocabulary), 4-layer ViT on 8×8 patches."""
    text = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=TEXT_WIDTH,
    )
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_channels=3,
        hidden_size=96,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        projection_dim=TEXT_WIDTH,
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=TEXT_WIDTH)


def build_clip() -> CLIPModel:
    return CLIPModel(clip_config())


def build_unet(architecture: str = "v1") -> UNet2DConditionModel:
    """U-Net on 16×16×4 latents; cross-attention (64-wide text) at the 8×8 and 4×4 levels (see `versions`)."""
    return UNet2DConditionModel(**unet_config(architecture, latent_size=LATENT_SIZE, text_width=TEXT_WIDTH))


def build_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """SD's noise schedule (scaled-linear betas, 1000 steps) with DDIM sampling."""
    return sd_ddim_scheduler(prediction_type)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(8, c_out),
        nn.SiLU(),
    )


class SegmentationNet(nn.Module):
    """A small U-shaped conv net: (B, 3, H, W) images in [-1, 1] → (B, 1 + 20, H, W) class logits.

    Channel 0 is background, channel 1 + i is `CLASSES[i]`. H and W must be multiples of 8.
    """

    def __init__(self, *, width: int = 32, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _conv_block(3, w), _conv_block(w, 2 * w), _conv_block(2 * w, 4 * w)
        self.bottom = _conv_block(4 * w, 4 * w)
        self.dec3, self.dec2, self.dec1 = _conv_block(8 * w, 2 * w), _conv_block(4 * w, w), _conv_block(2 * w, w)
        self.head = nn.Conv2d(w, 1 + num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        down = nn.functional.max_pool2d
        up = nn.functional.interpolate
        e1 = self.enc1(images)  # (B, w, H, W)
        e2 = self.enc2(down(e1, 2))  # (B, 2w, H/2, W/2)
        e3 = self.enc3(down(e2, 2))  # (B, 4w, H/4, W/4)
        b = self.bottom(down(e3, 2))  # (B, 4w, H/8, W/8)
        d3 = self.dec3(torch.cat([up(b, scale_factor=2.0), e3], dim=1))  # (B, 2w, H/4, W/4)
        d2 = self.dec2(torch.cat([up(d3, scale_factor=2.0), e2], dim=1))  # (B, w, H/2, W/2)
        d1 = self.dec1(torch.cat([up(d2, scale_factor=2.0), e1], dim=1))  # (B, w, H, W)
        return self.head(d1)  # (B, 1 + N, H, W)

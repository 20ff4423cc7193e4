"""Assemble the shipped weights (diffusers pipeline folder, CLIP, labeler) from the parts' runs, in fp16."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from groundiff.miniworld import models
from groundiff.miniworld.training import common
from groundiff.miniworld.training.labeler import LABELER_WIDTH
from groundiff.miniworld.versions import version_named
from groundiff.miniworld.vocabulary import CLASSES

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

log = logging.getLogger(__name__)


def _run_weights(config: common.TrainConfig, part: str, prefix: str = "model.") -> dict[str, torch.Tensor]:
    path = config.run_dir / part / "checkpoint.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"No {part} checkpoint at {path}; train it first: python scripts/train_miniworld.py {part}."
        )
    return {k[len(prefix) :]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}


def _fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.float16).contiguous() for k, v in state.items()}


def _publish_unet(config: common.TrainConfig, part: str, checkpoints_dir: Path) -> UNet2DConditionModel:
    """The EMA weights of a U-Net run; its step goes to `<checkpoints_dir>/<part>.json`, where `--resume` reads it."""
    version = version_named(part)
    unet = models.build_unet(version.architecture)
    run = config.run_dir / part / "checkpoint.safetensors"
    unet.load_state_dict(_run_weights(config, part, "ema."))
    with safe_open(str(run), framework="pt") as handle:
        step = int(handle.metadata()["step"])
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    # The run's checkpoint does not hold its batch size: the part's default unless publish is told otherwise.
    batch_size = config.batch_size or common.DEFAULT_BATCH[part]
    record = {"model": version.model, "step": step, "batch_size": batch_size, "seed": config.seed}
    (checkpoints_dir / f"{part}.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("publish: %s EMA at step %d", version.model, step)
    return unet


def publish(
    config: common.TrainConfig,
    parts: Sequence[str],
    weights_dir: Path,
    checkpoints_dir: Path,
    grounding_checkpoint: Path | None = None,
) -> None:
    """Write the shipped weights of `parts` (vae, clip, the U-Nets, labeler, grounding) from their runs, in fp16.

    The pipeline folder is rewritten as a whole (components not published now are read back from it);
    a U-Net ships its EMA weights (`unet` in the pipeline, the other versions in their own folders).
    `grounding` ships the checkpoint folder `grounding_checkpoint` (the `best/` of a `groundiff train` run made
    with src/groundiff/configs/models/miniworld-grounding.yaml).
    """
    if "grounding" in parts:
        if grounding_checkpoint is None:
            raise ValueError("Publishing grounding needs --grounding-checkpoint (a run's best/ folder).")
        from groundiff.model.checkpoint import export_checkpoint

        export_checkpoint(grounding_checkpoint, weights_dir / "grounding")
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
            sample = common.images_to_tensor(common.train_set(config).images[:2000])
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
        components["unet"] = _publish_unet(config, "unet", checkpoints_dir)
    for part in common.UNET_PARTS[1:]:  # the first U-Net ships inside the pipeline
        if part in parts:
            unet = _publish_unet(config, part, checkpoints_dir)
            unet.to(torch.float16).save_pretrained(str(weights_dir / version_named(part).folder))
    if components:
        existing = {}
        if (pipeline_dir / "model_index.json").exists():
            existing = {
                "vae": lambda: AutoencoderKL.from_pretrained(pipeline_dir / "vae"),
                "text_encoder": lambda: CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder"),
                "unet": lambda: UNet2DConditionModel.from_pretrained(pipeline_dir / "unet"),
            }
        if "unet" not in components and "unet" not in existing:
            # The base U-Net trains from a pipeline folder that holds the VAE and text encoder, so the first
            # publish (vae, clip) ships an untrained one in its place until `publish --parts unet`.
            log.warning("publish: no U-Net published yet; the pipeline holds an untrained one until --parts unet")
            components["unet"] = models.build_unet(version_named("unet").architecture)
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

"""Truth sets: mini-world renders with exact masks, in the same shards as generated sets.

A generated set's masks come from a labeler, which errs. The renderer knows every object's exact
mask, so a truth set holds renders (images the diffusion model never drew) of the same class pairs
as the generated set of that kind and seed, with their exact masks, and features read from the
pipeline as for any given image (`capture.images.features_of_images`: VAE encode, noise to a
denoising step, one U-Net pass with the prompt). `groundiff evaluate` scores a checkpoint on them
against the truth, beside the generated sets scored against the labeler.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundiff.capture.config import CaptureConfig, Layout
from groundiff.config import option
from groundiff.sd.dtypes import parse_dtype

log = logging.getLogger(__name__)

TRUTH_SOURCE = "miniworld-render"
# Fields that change how a truth set is produced but not what it contains: free to differ on resume.
EXECUTION_FIELDS = ("out", "batch_size", "samples_per_shard", "progress")


@dataclass
class TruthSetConfig:
    """One truth set. Its classes per index are those of the generated set of the same kind and seed
    (first attempt); `steps` and the feature fields must match the sets the checkpoint trained on."""

    out: str = option("data/truth-test-seen", "the set's folder (shards, config.json, manifest.json)")
    set: str = option("test-seen", "val, test-seen, test-mixed or test-unseen")
    model: str = option("miniworld", "the mini-world U-Net version whose features the renders get")
    style: str = option("plain", "the renders' background style: plain, or textured (miniworld-ft's style)")
    num_samples: int = option(1000, "renders in the set")
    seed: int = option(0, "set seed; render i depends only on (seed, set, i)")
    steps: int = option(20, "denoising steps of the generation run whose step is imitated")
    noise_step: int = option(-1, "denoising step whose timestep the render's latents are noised to (-1: last)")
    objects_per_prompt: int = option(2, "distinct classes per render")
    feature_blocks: tuple[str, ...] | None = option(None, "comma-separated U-Net blocks (default: all)")
    feature_steps: tuple[int, ...] = option((-1,), "the captured step the maps are named after (one)")
    feature_layout: str = option("cond", "cond or uncond+cond")
    feature_dtype: str = option("float16", "dtype of stored maps")
    attention_maps: bool = option(True, "also store per-class cross-attention heat of the pass")
    batch_size: int = option(32, "renders per U-Net pass")
    samples_per_shard: int = option(100, "samples per tar shard")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        if self.set == "train":
            raise ValueError(
                "Truth sets are for validation and testing; choose val, test-seen, test-mixed or test-unseen."
            )
        for name in ("num_samples", "steps", "batch_size", "samples_per_shard", "objects_per_prompt"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        from groundiff.miniworld.renderer import STYLES
        from groundiff.miniworld.versions import version_named

        version_named(self.model)
        if self.style not in STYLES:
            raise ValueError(f"Unknown style {self.style!r}; choose one of {', '.join(STYLES)}.")
        self.feature_steps = tuple(self.feature_steps)
        self.feature_blocks = tuple(self.feature_blocks) if self.feature_blocks is not None else None
        parse_dtype(self.feature_dtype)
        self.capture()

    def capture(self) -> CaptureConfig:
        return CaptureConfig(blocks=self.feature_blocks, steps=self.feature_steps, layout=Layout(self.feature_layout))

    def content(self) -> dict[str, Any]:
        """What decides the samples (a resumed set must match it), in the keys generated sets use."""
        values = dataclasses.asdict(self)
        content = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k not in EXECUTION_FIELDS}
        if self.style == "plain":
            del content["style"]  # sets made before styles existed keep their identity
        return {**content, "labeler": "exact", "source": TRUTH_SOURCE}


def make_truth_set(config: TruthSetConfig, *, pipe: Any = None) -> Path:
    """Write (or resume) the truth set `config.out`; returns its folder once complete.

    Args:
        config: the set's definition.
        pipe: the mini-world pipeline, by default the shipped one.
    """
    # Imported here so that the CLI can read TruthSetConfig without loading torch-heavy modules.
    from tqdm.auto import tqdm

    from groundiff.data.manifest import MANIFEST_FILE, collect_done, write_manifest
    from groundiff.data.shards import TEMP_SUFFIX, BackgroundWriter, ShardWriter
    from groundiff.data.vocabulary import load_split
    from groundiff.generation.generate import prepare_folder
    from groundiff.generation.sampling import class_pools

    folder = Path(config.out)
    prepare_folder(folder, config.content())
    if (folder / MANIFEST_FILE).exists():
        log.info("Truth set %s is already complete.", folder)
        return folder
    split = load_split("miniworld")
    pools = class_pools(split, config.set, None, config.objects_per_prompt)
    done, shard_counts = collect_done(folder)
    prefix = f"{config.set}-truth"
    for stale in folder.glob(f"{prefix}-*{TEMP_SUFFIX}"):
        stale.unlink()  # a shard a killed run left half-written; its samples are made again
    todo = [i for i in range(config.num_samples) if i not in done]
    if todo:
        if pipe is None:
            from groundiff.sd.pipelines import load_pipeline

            pipe = load_pipeline(config.model, device="cpu")
        writer = ShardWriter(folder, prefix, config.samples_per_shard, shard_counts.get(prefix, 0))
        bar = tqdm(total=len(todo), desc=f"truth {config.set}", unit="render", disable=not config.progress)
        with writer, BackgroundWriter(writer) as background, bar:
            for start in range(0, len(todo), config.batch_size):
                for record in _render_batch(config, pools, pipe, todo[start : start + config.batch_size]):
                    background.write(record)
                    bar.update(1)
    write_manifest(folder, config.content(), split.classes)
    return folder


def _render_batch(config: TruthSetConfig, pools: Any, pipe: Any, indices: list[int]) -> list[Any]:
    """The `SampleRecord`s of the given indices: render, read the features, keep the exact masks."""
    import numpy as np

    from groundiff.capture.attention import class_heat_maps
    from groundiff.capture.images import features_of_images
    from groundiff.data.records import SampleRecord
    from groundiff.generation.sampling import attempt_seed, draw_classes
    from groundiff.miniworld.renderer import render_scene
    from groundiff.text import PROMPT_TEMPLATES, PromptTemplate

    template = PromptTemplate(PROMPT_TEMPLATES["generation"])
    seeds = [attempt_seed(config.seed, config.set, index, 0) for index in indices]
    classes = [list(draw_classes(pools, config.objects_per_prompt, seed)) for seed in seeds]
    scenes = [render_scene(names, seed, style=config.style) for names, seed in zip(classes, seeds, strict=True)]
    prompts = [template.format(names)[0] for names in classes]
    output = features_of_images(
        pipe,
        np.stack([scene.image for scene in scenes]),
        prompts,
        seeds,
        num_inference_steps=config.steps,
        noise_step=config.noise_step,
        capture=config.capture(),
        attention=config.attention_maps,
    )
    features = output.features.to("cpu", parse_dtype(config.feature_dtype))
    records = []
    for j, index in enumerate(indices):
        meta = {
            "prompt": prompts[j],
            "classes": classes[j],
            "index": index,
            "attempt": 0,
            "seed": seeds[j],
            "set": config.set,
            "model": config.model,
            "source": TRUTH_SOURCE,
            "steps": config.steps,
            "noise_step": config.noise_step,
            "feature_timesteps": {str(k): v for k, v in features.timesteps.items()},
            "labeler": "exact",
            "scorer": "none",
            "iqa": None,
            "discarded_attempts": [],
        }
        heat = None
        if output.attention is not None:
            heat = class_heat_maps(output.attention[j], pipe.tokenizer, prompts[j], classes[j]).half()
        masks = [scenes[j].masks[name] for name in classes[j]]
        records.append(SampleRecord(index, scenes[j].image, features.flat(j), masks, meta, heat))
    return records

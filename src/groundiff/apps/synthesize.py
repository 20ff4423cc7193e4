"""`groundiff synthesize`: a segmentation dataset for any classes, labelled by the grounding model alone.

The grounding model learned from a labeler on seen classes; here it labels images of classes no
labeler knows. Three steps, each resumable:

1. Generate images of the classes with their U-Net features and no labeler (`generate_set`:
   sharded, several workers, with the sampler and capture settings of the checkpoint's training set,
   so the model reads the features it learned from).
2. Label every image from its features (`GroundingLabeler` through `label_set`). An image is kept
   only if each named object is found (`GroundingModel.found`: its mask, the presence output of a model
   trained with negatives, the share of its mask it keeps against the other objects) and covers at
   least `min_area` of the image; the kept samples are WebDataset shards like every groundiff set.
3. Export the kept images as COCO JSON and VOC index PNGs (`data.export.export_set`).

With `--data`, step 1 is skipped: an existing generated set is labelled by the grounding model
(`--labels grounding`) or exported with the masks it holds (`--labels set`, e.g. a labeler's).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from groundiff.config import option

log = logging.getLogger(__name__)

GENERATED, LABELLED, DATASET = "generated", "labelled", "dataset"
CLASSES_FILE = "classes.json"  # the vocabulary the generated set draws from
MANIFEST = "synthesis.json"


@dataclass
class SynthesizeConfig:
    """A synthesized segmentation dataset (`groundiff synthesize`). Folders under `out`: `generated/`
    (images and features), `labelled/` (WebDataset shards with masks), `dataset/` (COCO, VOC, images)."""

    out: str = option("synthetic", "the dataset folder")
    classes: tuple[str, ...] | None = option(
        None, "comma-separated class names, or a text file with one class per line (default with --data: its own)"
    )
    data: str | None = option(None, "label or convert this existing generated set instead of generating one")
    labels: Literal["grounding", "set"] = option(
        "grounding", "grounding (the grounding model labels the images) or set (the masks --data holds)"
    )
    checkpoint: str | None = option(
        None, "grounding checkpoint folder; default: the one shipped with the model's world"
    )
    model: str | None = option(None, "the diffusion model; default: the checkpoint's")
    num_samples: int = option(1000, "images to generate (the dataset keeps those where every object is found)")
    objects_per_prompt: int = option(2, "distinct classes per image")
    seed: int = option(0, "set seed; image i depends only on (seed, i)")
    min_area: float = option(0.002, "smallest object kept, as a fraction of the image; smaller drops the image")
    formats: tuple[str, ...] = option(("coco", "voc"), "comma-separated export formats: coco, voc")
    attention_maps: bool = option(False, "also store each class's cross-attention heat (for comparisons)")
    batch_size: int | None = option(None, "images per pipeline call (default: the world's)")
    device: str | None = option(None, "cpu, cuda, ... (default: cuda when available)")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.objects_per_prompt < 1:
            raise ValueError(
                f"num_samples and objects_per_prompt must be at least 1, got {self.num_samples} and "
                f"{self.objects_per_prompt}."
            )
        if not 0.0 <= self.min_area < 1.0:
            raise ValueError(f"--min-area is a fraction of the image in [0, 1), got {self.min_area}.")
        if self.labels == "set" and self.data is None:
            raise ValueError("--labels set exports the masks of an existing set: name it with --data.")
        if self.data is None and not self.classes:
            raise ValueError('Name the classes to synthesize, e.g. --classes "red ring,blue cross" or --classes FILE.')
        if self.classes:
            self.classes = tuple(read_class_list(self.classes))
            if self.data is None and len(self.classes) < self.objects_per_prompt:
                raise ValueError(
                    f"Each image names {self.objects_per_prompt} distinct classes but --classes lists "
                    f"{len(self.classes)}; name more classes or lower --objects-per-prompt."
                )
        from groundiff.data.export import EXPORT_FORMATS

        unknown = [f for f in self.formats if f not in EXPORT_FORMATS]
        if unknown:
            raise ValueError(f"Unknown format {unknown[0]!r} in --formats; choose from {', '.join(EXPORT_FORMATS)}.")


def read_class_list(classes: Sequence[str]) -> list[str]:
    """Class names as given, or read from a text file (one class per line, `#` comments) named alone.

    Raises:
        ValueError: no classes, or a class listed twice.
    """
    names = list(classes)
    if len(names) == 1 and Path(names[0]).is_file():
        lines = Path(names[0]).read_text().splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise ValueError("The class list is empty; name at least one class.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"Class {repeated[0]!r} is listed twice; list each class once.")
    return names


class GroundingLabeler:
    """Labels stored samples with a grounding model from their captured U-Net maps (a `RecordLabeler`).

    A class is returned (so the sample is kept) when the model finds it and its mask covers at least
    `min_area` of the image; its score is the mean probability inside the mask.
    """

    def __init__(self, pipe: Any, model: Any, meta: Any, *, min_area: float) -> None:
        self.pipe, self.model, self.meta, self.min_area = pipe, model, meta, min_area

    def label_records(self, records: Sequence[Any]) -> list[Any]:
        from groundiff.ground import ground_maps
        from groundiff.labeling.base import LabelResult

        results = []
        for record in records:
            maps = {name: tensor[None] for name, tensor in record.features.items()}  # (1, C, h, w)
            if {name: tuple(t.shape[1:]) for name, t in maps.items()} != self.meta.feature_shapes:
                raise ValueError(
                    f"Sample {record.key} stores features {sorted(maps)} of other shapes than the checkpoint "
                    f"expects ({self.meta.feature_shapes}); label a set generated with the checkpoint's capture "
                    f"settings and feature storage 'maps'."
                )
            grounded = ground_maps(
                self.pipe, self.model, self.meta, record.meta["prompt"], record.image, maps, record.classes
            )
            result = LabelResult()
            for name in record.classes:
                mask = grounded.masks[name]
                if grounded.found.get(name, True) and mask.mean() >= self.min_area and mask.any():
                    result.masks[name] = mask
                    result.scores[name] = float(grounded.probabilities[name][mask].mean())
            results.append(result)
        return results


@dataclass
class SynthesisReport:
    """What `synthesize` did: the folders, and per class how many images were generated and kept."""

    out: Path
    complete: bool = False
    generated: int = 0
    kept: int = 0
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def synthesize(config: SynthesizeConfig, *, worker: int = 0, workers: int = 1, pipe: Any = None) -> SynthesisReport:
    """Generate, label and export the dataset of `config` (see the module docstring); resumable.

    Each of `workers` processes generates its share of the images; the one that finds the set complete
    labels and exports it (the others return with `complete` False).

    Raises:
        ValueError: unknown classes, a checkpoint whose features the set does not store, bad formats.
        FolderBusyError: another process labels or exports the same folder.
    """
    from groundiff.data.manifest import MANIFEST_FILE
    from groundiff.files import hold_lock

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    grounding = None
    if config.labels == "grounding":
        grounding = _checkpoint(config)
        if pipe is None:
            from groundiff.sd.pipelines import load_pipeline

            pipe = load_pipeline(grounding[2], device=config.device or "cpu")
    # 1. Images and features: an existing set, or generated without a labeler.
    if config.data is not None:
        source = Path(config.data)
        if not (source / MANIFEST_FILE).exists():
            raise FileNotFoundError(
                f"--data {str(source)!r} is no complete set (no {MANIFEST_FILE}); generate it first."
            )
    else:
        assert grounding is not None  # `SynthesizeConfig` refuses --labels set without --data
        source = out / GENERATED
        if not _generate(config, out, grounding[1], grounding[2], worker=worker, workers=workers, pipe=pipe).complete:
            message = f"worker {worker}/{workers} finished its share; the worker that completes the set labels it"
            return SynthesisReport(out, messages=[message])
    with hold_lock(out / "synthesize.lock", f"the synthesized dataset {str(out)!r}"):
        # 2. Masks: the grounding model's (kept samples only), or those the set holds.
        labelled = source
        if grounding is not None:
            labelled = out / LABELLED
            _label(config, source, labelled, grounding, pipe=pipe)
        # 3. The dataset files.
        return _export(config, source, labelled, out)


def _checkpoint(config: SynthesizeConfig) -> tuple[Any, Any, str]:
    """The grounding model, its metadata and the diffusion model name to run."""
    from groundiff.ground import resolve_checkpoint
    from groundiff.model.checkpoint import load_grounding_model

    folder, model_name = resolve_checkpoint(config.checkpoint, config.model)
    model, meta = load_grounding_model(folder)
    return model, meta, model_name or meta.set_config.get("model", meta.text_model)


def _generate(
    config: SynthesizeConfig, out: Path, meta: Any, model_name: str, *, worker: int, workers: int, pipe: Any
) -> Any:
    """Step 1: the images of the classes with the sampler and capture settings of the checkpoint (`meta`)."""
    from groundiff.files import write_json_atomic
    from groundiff.generation.config import GenerateConfig
    from groundiff.generation.generate import generate_set

    classes = list(config.classes or ())
    set_config = meta.set_config
    vocabulary = out / CLASSES_FILE  # the set draws from exactly these classes, whatever the world's split
    if not vocabulary.exists():
        write_json_atomic(vocabulary, {"name": "synthesize", "seen": classes, "unseen": []})
    elif json.loads(vocabulary.read_text())["seen"] != classes:
        raise ValueError(
            f"{str(out)!r} was synthesized for other classes ({vocabulary}); use another --out for these classes."
        )
    generate = GenerateConfig(
        out=str(out / GENERATED),
        set="train",
        model=model_name,
        labeler="none",
        scorer="none",
        vocabulary=str(vocabulary),
        num_samples=config.num_samples,
        objects_per_prompt=config.objects_per_prompt,
        template=set_config["template"],
        seed=config.seed,
        steps=set_config["steps"],
        guidance_scale=set_config["guidance_scale"],
        height=set_config.get("height"),
        width=set_config.get("width"),
        feature_blocks=_tuple_or_none(set_config.get("feature_blocks")),
        feature_steps=tuple(set_config["feature_steps"]),
        feature_layout=set_config["feature_layout"],
        feature_dtype=set_config.get("feature_dtype", "float16"),
        attention_maps=config.attention_maps,
        batch_size=config.batch_size,
        device=config.device,
        progress=config.progress,
    )
    return generate_set(generate, worker=worker, workers=workers, pipe=pipe)


def _tuple_or_none(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _label(
    config: SynthesizeConfig, source: Path, labelled: Path, grounding: tuple[Any, Any, str], *, pipe: Any
) -> None:
    """Step 2: the grounding model's masks of every image of `source`, the kept samples in `labelled`."""
    from groundiff.data.manifest import MANIFEST_FILE, read_set_config
    from groundiff.generation.annotate import label_set

    if (labelled / MANIFEST_FILE).exists():
        return
    model, meta, _ = grounding
    generated_by = read_set_config(source).get("model")
    if generated_by != meta.text_model:
        raise ValueError(
            f"Set {str(source)!r} was generated by {generated_by!r}, the checkpoint reads features of "
            f"{meta.text_model!r}; label sets of the same model."
        )
    model = model.to(pipe.device)
    labeler = GroundingLabeler(pipe, model, meta, min_area=config.min_area)
    name = f"grounding:{config.checkpoint or 'shipped'}"
    label_set(source, labelled, labeler, name, batch_size=16, progress=config.progress)


def _export(config: SynthesizeConfig, source: Path, labelled: Path, out: Path) -> SynthesisReport:
    """Step 3: the dataset files, and `synthesis.json` with per-class counts of generated and kept images."""
    from groundiff.data.export import export_set
    from groundiff.data.shards import iter_metadata
    from groundiff.files import write_json_atomic

    classes = list(config.classes) if config.classes else None
    export = export_set(
        labelled,
        out / DATASET,
        classes=classes,
        formats=config.formats,
        info={"labels": config.labels, "checkpoint": config.checkpoint or "shipped", "min_area": config.min_area},
        progress=config.progress,
    )
    named, kept = Counter[str](), Counter[str]()
    source_metas = list(iter_metadata(source))
    for meta in source_metas:
        named.update(meta["classes"])
    for meta in iter_metadata(labelled):
        kept.update(meta["classes"])
    report = SynthesisReport(out, complete=True, generated=len(source_metas), kept=export.images)
    report.per_class = {
        name: {"generated": named[name], "kept": kept[name], **export.per_class.get(name, {})}
        for name in classes or sorted(named)
    }
    write_json_atomic(
        out / MANIFEST,
        {
            "generated": report.generated,
            "kept": report.kept,
            "keep_rate": report.kept / max(report.generated, 1),
            "per_class": report.per_class,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
            "files": [str(path) for path in export.files],
        },
    )
    return report

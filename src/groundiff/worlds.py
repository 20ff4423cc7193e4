"""Worlds: a diffusion model together with what a grounded set needs from it.

A world bundles a pipeline, the labeler that finds its objects, the scorer that rates its images,
its class vocabulary and the generation settings that suit it. `--model NAME` picks a world when
NAME is registered as one; `auto` labeler, scorer and vocabulary then mean the world's own, and the
world's steps, guidance and batch size replace the Stable Diffusion defaults. Any other model name
(a hub id, a folder, a checkpoint file) is a plain Stable Diffusion model: Mask R-CNN, no scorer,
Pascal VOC Split-1, 50 steps at guidance 7.5.

This module sits at the bottom of the package: it imports nothing from groundiff, and the code that
builds a world (which may import anything) is found by name, so lower layers can ask for a world
without importing the layers above them. The shipped mini world is `groundiff.miniworld.world`;
register your own with `register_world(World(...))` at import time of your package, or declare it
under the `groundiff.worlds` entry-point group (see docs/ARCHITECTURE.md for an example).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "groundiff.worlds"
# Worlds shipped with groundiff, as "module:attribute" so that naming one imports only its own code.
BUILTIN_WORLDS = {
    "miniworld": "groundiff.miniworld.world:MINIWORLD",
    # The mini world's other U-Net versions (a fine-tune and a second version; groundiff.miniworld.versions).
    "miniworld-ft": "groundiff.miniworld.world:MINIWORLD_FT",
    "miniworld-v2": "groundiff.miniworld.world:MINIWORLD_V2",
    "miniworld-crowd": "groundiff.miniworld.world:MINIWORLD_CROWD",
}


@dataclass(frozen=True)
class GenerationDefaults:
    """What `auto` and unset generation fields mean for a model."""

    labeler: str
    scorer: str
    vocabulary: str
    steps: int
    guidance_scale: float
    batch_size: int


# A model that is no registered world: the paper's Stable Diffusion settings.
STABLE_DIFFUSION_DEFAULTS = GenerationDefaults(
    labeler="maskrcnn", scorer="none", vocabulary="voc-split1", steps=50, guidance_scale=7.5, batch_size=1
)


@dataclass(frozen=True)
class World:
    """A diffusion model and its own labeler, scorer and vocabulary, all registered under `name`.

    Attributes:
        name: the name `--model`, `--labeler`, `--scorer` and `--vocabulary` take for this world's parts.
        pipeline: loads the diffusers pipeline (keyword `device`).
        labeler: builds the labeler (keyword options, as `load_labeler` passes them).
        scorer: builds the quality scorer (keywords `device`, `batch_size`), or None for no scores.
        vocabulary: the class split (a `groundiff.data.vocabulary.ClassSplit`).
        steps, guidance_scale, batch_size: generation settings that suit the model.
        references: world-specific training-free references for evaluation, or None. It returns a dict:
            `colour_threshold` (a rule record, target -> masks), `two_colours` (a filter record -> bool
            for the images that rule is also scored on) and `labeler` (a rule scoring the world's
            labeler against exact masks on truth sets); see `groundiff.evaluation.reference_scores`.
        truth_set: renders a set with exact masks (keywords of the world's truth-set config plus `pipe`)
            and returns its folder, or None when the world has no renderer.
        labeler_accuracy: the labeler's mIoU against exact masks (takes a labeler), or None.
        grounding_checkpoint: the folder of a grounding checkpoint shipped for this world's model (what
            `groundiff ground` and `groundiff serve` use without --checkpoint), or None.
    """

    name: str
    pipeline: Callable[..., Any]
    labeler: Callable[..., Any]
    vocabulary: Callable[[], Any]
    scorer: Callable[..., Any] | None = None
    steps: int = 50
    guidance_scale: float = 7.5
    batch_size: int = 1
    references: Callable[[], dict[str, Any]] | None = None
    truth_set: Callable[..., Any] | None = None
    labeler_accuracy: Callable[[Any], float] | None = None
    grounding_checkpoint: Callable[[], Any] | None = None

    def defaults(self) -> GenerationDefaults:
        return GenerationDefaults(
            labeler=self.name,
            scorer=self.name if self.scorer is not None else "none",
            vocabulary=self.name,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            batch_size=self.batch_size,
        )


_registered: dict[str, World] = {}


def register_world(world: World) -> None:
    """Make `world` available by its name (replacing a world of the same name)."""
    _registered[world.name] = world


def _declared() -> dict[str, str]:
    """Worlds by name: the shipped ones and those other packages declare as entry points."""
    declared = dict(BUILTIN_WORLDS)
    declared.update({entry.name: entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)})
    return declared


def world_names() -> list[str]:
    return sorted({*_registered, *_declared()})


def get_world(name: str) -> World | None:
    """The world registered as `name`, or None when `name` is a plain model (hub id, folder, file)."""
    if name in _registered:
        return _registered[name]
    target = _declared().get(name)
    if target is None:
        return None
    module, _, attribute = target.partition(":")
    world = getattr(importlib.import_module(module), attribute)
    if not isinstance(world, World) or world.name != name:
        raise TypeError(f"{target!r} (declared as world {name!r}) is not a World named {name!r}.")
    register_world(world)
    return world


def require_world(name: str, what: str) -> World:
    """The world `name`, or a ValueError naming the known worlds (for `what`, e.g. "truth sets")."""
    world = get_world(name)
    if world is None:
        close = difflib.get_close_matches(name, world_names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{what} need a registered world; {name!r} is none.{hint} Worlds: {', '.join(world_names())}.")
    return world


def generation_defaults(model: str) -> GenerationDefaults:
    """The labeler, scorer, vocabulary and generation settings `auto` means for `model`."""
    world = get_world(model)
    return world.defaults() if world is not None else STABLE_DIFFUSION_DEFAULTS

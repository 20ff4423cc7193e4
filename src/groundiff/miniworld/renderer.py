"""The procedural scene renderer: flat-coloured shapes on a textured background, with exact masks.

A scene is a 64×64 RGB image of N objects (default 2) drawn from the 20-class vocabulary, each
object at a random place, size, rotation and colour shade, later objects occluding earlier ones,
over a smooth low-saturation background texture. The masks are exact: each pixel's colour comes
from exactly the object whose visible mask holds it, so ground truth and image agree pixel for
pixel. Everything is a function of the seed.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from groundiff.miniworld.vocabulary import CLASSES, COLOUR_HUES, split_class_name

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # shapes are drawn at 4× and a pixel belongs to a shape when ≥ half of it is covered
RADIUS_RANGE = (10.0, 15.0)  # circumradius in pixels: objects are 20–30 px across
MIN_VISIBLE = 0.6  # each object keeps at least this share of its area visible under occlusion
MAX_PLACEMENT_TRIES = 100
# Background styles: "plain" is the world the shipped models learnt; "textured" adds stripes and grain,
# the changed style that the fine-tuned U-Net (miniworld-ft) learns, as community fine-tunes change style.
STYLES = ("plain", "textured")


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: class, centre (x, y) and circumradius in pixels, rotation in radians, RGB in [0, 1]."""

    class_name: str
    center: tuple[float, float]
    radius: float
    angle: float
    color: tuple[float, float, float]


@dataclass
class Scene:
    """A rendered scene.

    Attributes:
        image: (H, W, 3) uint8 in [0, 255].
        masks: class name → (H, W) bool visible mask, one per class in the scene.
        objects: the drawn objects, back to front.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    objects: list[SceneObject]

    @property
    def class_names(self) -> list[str]:
        return [obj.class_name for obj in self.objects]

    def label_map(self) -> np.ndarray:
        """(H, W) uint8: 0 for background, 1 + index in `CLASSES` where an object is visible."""
        labels = np.zeros(self.image.shape[:2], dtype=np.uint8)
        for name, mask in self.masks.items():
            labels[mask] = CLASSES.index(name) + 1
        return labels


def _shape_outline(shape: str) -> list[list[tuple[float, float]]]:
    """Polygons of a shape in unit coordinates (circumradius 1); the first is filled, the rest are holes."""
    if shape in ("disc", "ring"):
        circle = [(float(np.cos(t)), float(np.sin(t))) for t in np.linspace(0, 2 * np.pi, 64, endpoint=False)]
        hole = [(0.5 * x, 0.5 * y) for x, y in circle]
        return [circle, hole] if shape == "ring" else [circle]
    if shape == "triangle":
        return [[(float(np.cos(t)), float(np.sin(t))) for t in np.pi / 2 + np.arange(3) * 2 * np.pi / 3]]
    if shape == "cross":
        w = 0.34  # half-width of an arm
        return [
            [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        ]
    if shape == "hourglass":
        return [[(-0.75, -0.95), (0.75, -0.95), (0.14, 0.0), (0.75, 0.95), (-0.75, 0.95), (-0.14, 0.0)]]
    raise ValueError(f"Unknown shape {shape!r}.")


def _object_mask(obj: SceneObject, size: int) -> np.ndarray:
    """(size, size) bool: the pixels the object covers by at least half, ignoring occlusion."""
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    cos, sin = np.cos(obj.angle), np.sin(obj.angle)
    cx, cy = obj.center
    for index, polygon in enumerate(_shape_outline(split_class_name(obj.class_name)[1])):
        points = [
            (
                (cx + obj.radius * (cos * x - sin * y)) * SUPERSAMPLE,
                (cy + obj.radius * (sin * x + cos * y)) * SUPERSAMPLE,
            )
            for x, y in polygon
        ]
        draw.polygon(points, fill=0 if index else 255)
    coverage = np.asarray(canvas, dtype=np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return coverage >= 127.5


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 noise in about [-1, 1], smooth at the scale of size / cells pixels."""
    grid = Image.fromarray(rng.uniform(-1, 1, (cells, cells)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: a low-saturation base colour with smooth texture and a gradient."""
    base = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.22), rng.uniform(0.35, 0.85)))
    texture = _smooth_noise(rng, size, int(rng.integers(3, 9)))[..., None] * rng.uniform(0.03, 0.1)
    tint = np.stack([_smooth_noise(rng, size, 4) for _ in range(3)], axis=-1) * 0.025
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1) - 0.5  # (H, W) each
    direction = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(direction) * xs + np.sin(direction) * ys)[..., None] * rng.uniform(0.0, 0.2)
    return (base[None, None, :] + texture + tint + gradient).astype(np.float32)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 1) float32 luminance pattern of the textured style: oriented stripes plus fine grain."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    direction = rng.uniform(0, np.pi)
    period = rng.uniform(5.0, 12.0)
    phase = (np.cos(direction) * xs + np.sin(direction) * ys) * 2 * np.pi / period
    stripes = np.sin(phase) * rng.uniform(0.05, 0.1)
    grain = _smooth_noise(rng, size, 24) * rng.uniform(0.03, 0.06)
    return (stripes + grain)[..., None].astype(np.float32)


def _object_colour(rng: np.random.Generator, colour: str) -> tuple[float, float, float]:
    hue = (COLOUR_HUES[colour] + rng.uniform(-8, 8)) % 360 / 360
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.78, 1.0))
    return (r, g, b)


def _place_objects(
    rng: np.random.Generator, class_names: Sequence[str], size: int
) -> tuple[list[SceneObject], list[np.ndarray]]:
    """Random objects and their visible masks, retried until every object is at least MIN_VISIBLE visible."""
    for _ in range(MAX_PLACEMENT_TRIES):
        objects, full_masks = [], []
        for name in class_names:
            radius = float(rng.uniform(*RADIUS_RANGE))
            center = (float(rng.uniform(radius, size - radius)), float(rng.uniform(radius, size - radius)))
            colour = _object_colour(rng, split_class_name(name)[0])
            obj = SceneObject(name, center, radius, float(rng.uniform(0, 2 * np.pi)), colour)
            objects.append(obj)
            full_masks.append(_object_mask(obj, size))
        visible = []
        covered = np.zeros((size, size), dtype=bool)
        for mask in reversed(full_masks):  # front to back
            visible.append(mask & ~covered)
            covered |= mask
        visible.reverse()
        if all(v.sum() >= MIN_VISIBLE * max(f.sum(), 1) for v, f in zip(visible, full_masks, strict=True)):
            return objects, visible
    raise RuntimeError(f"Could not place {len(class_names)} objects in a {size}×{size} image; use fewer objects.")


def render_scene(class_names: Sequence[str], seed: int, *, size: int = IMAGE_SIZE, style: str = "plain") -> Scene:
    """Render one scene holding one object of each named class, back to front in the given order.

    Args:
        class_names: distinct mini-world class names, e.g. `["red disc", "blue ring"]`.
        seed: the scene is a pure function of (class_names, seed, size, style).
        size: image side in pixels.
        style: one of STYLES; a textured scene has the same objects as its plain twin, on another background.
    Returns:
        `Scene` with a (size, size, 3) uint8 image and one exact bool mask per class.
    """
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"Class names in one scene must be distinct, got {list(class_names)}.")
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; choose one of {', '.join(STYLES)}.")
    rng = np.random.default_rng(seed)
    image = _background(rng, size)
    if style == "textured":  # its own random stream, so the objects stay those of the plain scene
        image = image + _texture(np.random.default_rng([seed, 2]), size)
    objects, visible = _place_objects(rng, class_names, size)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)  # (H, W) each
    for obj, mask in zip(objects, visible, strict=True):
        light = rng.uniform(0, 2 * np.pi)
        shade = 1 + 0.12 * (np.cos(light) * (xs - obj.center[0]) + np.sin(light) * (ys - obj.center[1])) / obj.radius
        image[mask] = np.asarray(obj.color, dtype=np.float32)[None, :] * shade[mask][:, None]
    image += rng.normal(0, 0.012, image.shape).astype(np.float32)
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    masks = {obj.class_name: mask for obj, mask in zip(objects, visible, strict=True)}
    return Scene(image=pixels, masks=masks, objects=objects)


def sample_class_names(rng: np.random.Generator, classes: Sequence[str], num_objects: int) -> list[str]:
    """`num_objects` distinct classes drawn uniformly from `classes`."""
    if num_objects > len(classes):
        raise ValueError(f"Cannot draw {num_objects} distinct classes from {len(classes)}; lower num_objects.")
    return [classes[i] for i in rng.choice(len(classes), size=num_objects, replace=False)]


def render_random_scene(
    seed: int, *, classes: Sequence[str] = CLASSES, num_objects: int = 2, size: int = IMAGE_SIZE, style: str = "plain"
) -> Scene:
    """A scene of `num_objects` distinct classes drawn from `classes`, all chosen by `seed`."""
    rng = np.random.default_rng([seed, 1])
    return render_scene(sample_class_names(rng, classes, num_objects), seed, size=size, style=style)


@dataclass
class RenderedSet:
    """Many scenes as arrays, for training and evaluation.

    Attributes:
        images: (N, H, W, 3) uint8.
        labels: (N, H, W) uint8 label maps (0 background, 1 + class index).
        classes: (N, K) int64 class indices in `CLASSES` of the K objects, in caption order.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray

    def captions(self) -> list[str]:
        from groundiff.miniworld.vocabulary import make_caption

        return [make_caption([CLASSES[i] for i in row]) for row in self.classes]


def render_set(
    first_seed: int,
    count: int,
    *,
    classes: Sequence[str] = CLASSES,
    num_objects: int = 2,
    size: int = IMAGE_SIZE,
    style: str = "plain",
) -> RenderedSet:
    """Scenes for seeds first_seed … first_seed + count − 1, stacked (see `RenderedSet`)."""
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = np.empty((count, size, size), dtype=np.uint8)
    indices = np.empty((count, num_objects), dtype=np.int64)
    for i in range(count):
        scene = render_random_scene(first_seed + i, classes=classes, num_objects=num_objects, size=size, style=style)
        images[i], labels[i] = scene.image, scene.label_map()
        indices[i] = [CLASSES.index(name) for name in scene.class_names]
    return RenderedSet(images=images, labels=labels, classes=indices)

"""A baseline that knows the mini world's colours: masks by thresholding hue, saturation and value.

This baseline is given what no real world offers: the exact colour of every class (`COLOUR_HUES`)
and the knowledge that objects are saturated and bright while the background is not. It shows how
far the mini world can be solved without seeing shapes at all, i.e. what part of a model's mIoU
colour alone explains. It does not use the image's caption beyond the class names asked for.

How the renderer draws (`groundiff.miniworld.renderer`): object hue COLOUR_HUES ± 8°, saturation
0.7–1.0, value 0.78–1.0 times a ±12 % shade, on backgrounds of saturation ≤ 0.22, plus N(0, 0.012)
noise per channel. Measured over 2000 random scenes (1.3 M object pixels, 6.9 M background pixels):
object pixels keep hue distance ≤ 14.4°, saturation ≥ 0.63 and value ≥ 0.65; background
pixels reach saturation 0.67, but only where they are dark (saturation = chroma / value grows as
value falls): those with saturation ≥ 0.5 have value ≤ 0.31, those with value ≥ 0.5 saturation
≤ 0.42. With the thresholds below the masks of those scenes (distinct colours) are exact: IoU 1.0.
"""

from __future__ import annotations

import numpy as np

from groundiff.miniworld.vocabulary import COLOUR_HUES, split_class_name

# Between the objects' lowest saturation (0.63) and the bright background's highest (0.42: base
# ≤ 0.22 plus tint and noise).
MIN_SATURATION = 0.5
# Objects are never darker than 0.65; dark background pixels can be as saturated as objects (up to
# 0.67 at value ≤ 0.31), and this threshold keeps them out.
MIN_VALUE = 0.5
# Objects stay within 14.4° of their colour's hue (8° jitter plus noise and clipping); 20° leaves
# a margin and still keeps the closest pair of colours (red 0°, yellow 54°) apart.
HUE_TOLERANCE = 20.0


def rgb_to_hsv(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1], each (H, W) float64, of an (H, W, 3) uint8 image."""
    rgb = image.astype(np.float64) / 255.0  # (H, W, 3)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value, low = rgb.max(axis=-1), rgb.min(axis=-1)  # (H, W) each
    chroma = value - low
    safe = np.where(chroma > 0, chroma, 1.0)
    sector = np.where(
        value == red,
        ((green - blue) / safe) % 6,
        np.where(value == green, (blue - red) / safe + 2, (red - green) / safe + 4),
    )
    hue = np.where(chroma > 0, sector * 60.0, 0.0)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    return hue, saturation, value


def colour_threshold_masks(image: np.ndarray, class_names: list[str]) -> np.ndarray:
    """(N, H, W) bool: the pixels whose colour is the colour word of each class "{colour} {shape}".

    A pixel belongs to a class when its HSV saturation ≥ `MIN_SATURATION`, its value ≥ `MIN_VALUE`
    and its hue is within `HUE_TOLERANCE` degrees of `COLOUR_HUES[colour]`. A baseline that knows
    the world's colours (see the module docstring). It cannot tell two classes of the same colour
    apart: "red disc" and "red ring" in one image both get every red pixel.

    Args:
        image: (H, W, 3) uint8 RGB in [0, 255], e.g. `render_scene(...).image`.
        class_names: N mini-world class names, e.g. `["red disc", "blue ring"]`.
    Raises:
        ValueError: an image that is not (H, W, 3) uint8, or a name outside the vocabulary.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"colour_threshold_masks needs an (H, W, 3) uint8 RGB image; got shape {image.shape} and dtype "
            f"{image.dtype}. Convert floats in [0, 1] with (image * 255).round().astype(np.uint8)."
        )
    hue, saturation, value = rgb_to_hsv(image)
    coloured = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)  # (H, W)
    masks = []
    for name in class_names:
        distance = np.abs(hue - COLOUR_HUES[split_class_name(name)[0]]) % 360.0
        masks.append(coloured & (np.minimum(distance, 360.0 - distance) <= HUE_TOLERANCE))
    return np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), dtype=bool)  # (N, H, W)

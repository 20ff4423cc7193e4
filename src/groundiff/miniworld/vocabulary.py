"""The mini world's 20 classes (colour × shape), its 15 seen / 5 unseen split and its captions.

Every class is a two-word name "{colour} {shape}", so a class is always several CLIP tokens and
the class-token averaging of the method matters; `hourglass` is itself two BPE tokens
(`hour|glass`). The split mirrors Pascal VOC Split-1: each unseen class shares its colour word with
three or four seen classes and its shape word with three seen classes ("red ring" is unseen while
"red disc" and "blue ring" are seen), as "dog" shares appearance and CLIP neighbourhood with "cat".
"""

from __future__ import annotations

from collections.abc import Sequence

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("disc", "ring", "triangle", "cross", "hourglass")

# Hue (degrees) of each colour family; the renderer jitters hue, saturation and value around it.
COLOUR_HUES: dict[str, float] = {"red": 0.0, "green": 125.0, "blue": 222.0, "yellow": 54.0}

CLASSES: tuple[str, ...] = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)

# A diagonal through the colour × shape table: every shape keeps three seen colours, every colour
# keeps three or four seen shapes, so each unseen class is a new combination of seen words.
UNSEEN_CLASSES: tuple[str, ...] = ("red ring", "green triangle", "blue cross", "yellow hourglass", "blue disc")
SEEN_CLASSES: tuple[str, ...] = tuple(name for name in CLASSES if name not in UNSEEN_CLASSES)

PROMPT_TEMPLATE = "a photograph of a {x} and a {y}"


def split_class_name(name: str) -> tuple[str, str]:
    """`"red ring"` → `("red", "ring")`; raises ValueError naming the vocabulary for unknown names."""
    if name not in CLASSES:
        raise ValueError(f"Unknown mini-world class {name!r}; the classes are: {', '.join(CLASSES)}.")
    colour, shape = name.split(" ", 1)
    return colour, shape


def make_caption(class_names: Sequence[str]) -> str:
    """The generation prompt for the classes of one scene, in the paper's template.

    Two classes give "a photograph of a red disc and a blue ring"; one gives "a photograph of a
    red disc"; three or more are joined as "a photograph of a x, a y and a z".
    """
    if not class_names:
        raise ValueError("make_caption needs at least one class name.")
    items = [f"a {name}" for name in class_names]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return f"a photograph of {listed}"

"""Class vocabularies, seen/unseen splits and the five standard sets.

Built in: Pascal VOC's 20 classes with Split-1 of Li et al. (15 seen, 5 unseen) and the mini world's
split. A user's own vocabulary is a YAML, TOML or JSON file with `seen` and `unseen` lists.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from groundiff.config import read_config_file
from groundiff.worlds import get_world, world_names

VOC_SEEN = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "sheep",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
)
VOC_UNSEEN = ("tvmonitor", "car", "dog", "sofa", "train")

SET_KINDS = ("train", "val", "test-seen", "test-mixed", "test-unseen")
# The paper's set sizes: 10k training images, 1k for validation and for each test set.
DEFAULT_SET_SIZES = {"train": 10_000, "val": 1_000, "test-seen": 1_000, "test-mixed": 1_000, "test-unseen": 1_000}


@dataclass(frozen=True)
class ClassSplit:
    """A class vocabulary split into classes the grounding model trains on and held-out classes."""

    name: str
    seen: tuple[str, ...]
    unseen: tuple[str, ...]

    def __post_init__(self) -> None:
        names = self.seen + self.unseen
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"Split {self.name!r} lists {', '.join(repeated)} more than once; each class goes once.")
        if not self.seen:
            raise ValueError(f"Split {self.name!r} has no seen classes; the grounding model needs some to train on.")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.seen + self.unseen

    def check_names(self, names: Sequence[str]) -> None:
        """Raise a ValueError for the first name not in the vocabulary, suggesting the closest one."""
        for name in names:
            if name not in self.classes:
                close = difflib.get_close_matches(name, self.classes, n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                known = ", ".join(self.classes)
                raise ValueError(f"Unknown class {name!r} for vocabulary {self.name!r}.{hint} Known classes: {known}.")


VOC_SPLIT1 = ClassSplit("voc-split1", VOC_SEEN, VOC_UNSEEN)


def load_split(name_or_path: str) -> ClassSplit:
    """A built-in split (`voc-split1`), a world's own (`miniworld`) or one from a file with `seen` and `unseen`
    lists."""
    if name_or_path == VOC_SPLIT1.name:
        return VOC_SPLIT1
    world = get_world(name_or_path)
    if world is not None:
        split: ClassSplit = world.vocabulary()
        return split
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Vocabulary {name_or_path!r} is neither a built-in split (voc-split1), a world "
            f"({', '.join(world_names())}) nor a file. "
            f"Write a YAML/TOML/JSON file with 'seen' and 'unseen' lists of class names."
        )
    data = read_config_file(path)
    if "seen" not in data:
        raise ValueError(f"Vocabulary file {name_or_path!r} has no 'seen' list of class names.")
    return ClassSplit(str(data.get("name", path.stem)), tuple(data["seen"]), tuple(data.get("unseen", ())))

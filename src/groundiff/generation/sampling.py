"""What sample *i* of a set is: its attempt seeds and its classes, independent of workers and restarts.

Every random choice of an attempt comes from `attempt_seed(set seed, set kind, index, attempt)`,
so sample *i* is the same whatever the number of workers, the batch it lands in, or how often
generation was interrupted. A discarded attempt is retried with the next attempt number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from groundiff.data.vocabulary import SET_KINDS, ClassSplit


def attempt_seed(set_seed: int, set_kind: str, index: int, attempt: int) -> int:
    """A 31-bit seed for one attempt at one sample; distinct sets with the same seed differ."""
    entropy = [set_seed, SET_KINDS.index(set_kind), index, attempt]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass(frozen=True)
class ClassPools:
    """The classes a set draws from: `mixed` sets put at least one seen and one unseen class in each prompt."""

    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    mixed: bool


def class_pools(split: ClassSplit, set_kind: str, classes: Sequence[str] | None, objects: int) -> ClassPools:
    """The pools of a set kind, optionally restricted to `classes` (the `--classes` override).

    Raises:
        ValueError: unknown set kind or class, a class listed twice, or fewer classes than objects.
    """
    if set_kind not in SET_KINDS:
        raise ValueError(f"Unknown set {set_kind!r}; choose one of {', '.join(SET_KINDS)}.")
    if objects < 1:
        raise ValueError(f"objects_per_prompt must be at least 1, got {objects}.")
    if classes is not None:
        split.check_names(classes)
        repeated = sorted({c for c in classes if list(classes).count(c) > 1})
        if repeated:
            raise ValueError(f"Class {repeated[0]!r} is listed twice in --classes; list each class once.")
    allowed = set(split.classes if classes is None else classes)
    seen = tuple(c for c in split.seen if c in allowed)
    unseen = tuple(c for c in split.unseen if c in allowed)
    if set_kind in ("train", "val", "test-seen"):
        pools = ClassPools(seen, (), mixed=False)
    elif set_kind == "test-unseen":
        pools = ClassPools((), unseen, mixed=False)
    else:
        if objects < 2 or not seen or not unseen:
            raise ValueError(
                f"Set 'test-mixed' needs at least 2 objects per prompt and both seen and unseen classes; "
                f"got {objects} objects, seen {list(seen)}, unseen {list(unseen)}."
            )
        pools = ClassPools(seen, unseen, mixed=True)
    available = len(pools.seen) + len(pools.unseen)
    if available < objects:
        raise ValueError(
            f"Set {set_kind!r} draws {objects} distinct classes per prompt but its vocabulary has only "
            f"{available}: {', '.join(pools.seen + pools.unseen) or 'none'}. Lower objects_per_prompt or add classes."
        )
    return pools


def draw_count(fewest: int, most: int | None, seed: int) -> int:
    """How many objects an attempt names: `fewest`, or uniform in [fewest, most] when `most` is set."""
    if most is None or most == fewest:
        return fewest
    # A stream of its own (the seed's second word), so that the classes drawn from `seed` stay as they were.
    return int(np.random.default_rng([seed, 1]).integers(fewest, most + 1))


def draw_classes(pools: ClassPools, objects: int, seed: int) -> tuple[str, ...]:
    """`objects` distinct classes in random order; mixed pools give at least one seen and one unseen."""
    rng = np.random.default_rng(seed)
    everything = pools.seen + pools.unseen
    if not pools.mixed:
        return tuple(everything[i] for i in rng.choice(len(everything), size=objects, replace=False))
    first = (pools.seen[rng.integers(len(pools.seen))], pools.unseen[rng.integers(len(pools.unseen))])
    rest = [c for c in everything if c not in first]
    chosen = list(first) + [rest[i] for i in rng.choice(len(rest), size=objects - 2, replace=False)]
    return tuple(chosen[i] for i in rng.permutation(objects))

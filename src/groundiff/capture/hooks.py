"""Attaching forward hooks to a U-Net during one pipeline call, and proving they are gone after it.

We attach only through `register_forward_hook` / `register_forward_pre_hook` and remove every
handle in `finally`, so the pipeline is left exactly as it was, also when the call raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle


@contextmanager
def removable_hooks() -> Iterator[list[RemovableHandle]]:
    """Yield a list to append hook handles to; every handle is removed on exit, error or not."""
    handles: list[RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def hook_counts(module: nn.Module) -> dict[str, int]:
    """Number of forward (pre-)hooks on every submodule: equal before and after a capture."""
    counts: dict[str, int] = {}
    for name, sub in module.named_modules():
        hooks: list[Any] = [sub._forward_hooks, sub._forward_pre_hooks]
        counts[name] = sum(len(h) for h in hooks)
    return counts

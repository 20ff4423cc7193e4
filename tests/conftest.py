"""Shared fixtures: tiny seeded pipelines and the real CLIP tokenizer, all offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from groundiff import testing  # noqa: E402
from groundiff.tokenizer import load_clip_tokenizer  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session", params=["sd1", "sd2"])
def tiny_pipe(request: pytest.FixtureRequest):
    """A tiny pipeline of each architecture; tests must not change its state."""
    return testing.tiny_pipeline(request.param)


@pytest.fixture(scope="session")
def sd1_pipe():
    return testing.tiny_pipeline("sd1")


@pytest.fixture(scope="session")
def tokenizer():
    return load_clip_tokenizer()

"""Shared fixtures: tiny seeded pipelines and the real CLIP tokenizer, all offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from groundiff.data.vocabulary import VOC_SPLIT1  # noqa: E402
from groundiff.generation import GenerateConfig, GenerateReport, generate_set  # noqa: E402
from groundiff.labeling.stub import StubLabeler  # noqa: E402
from groundiff.sd import tiny as testing  # noqa: E402
from groundiff.sd.tokenizer import load_clip_tokenizer  # noqa: E402

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


class BrightnessScorer:
    name = "brightness"

    def score(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).mean(axis=1) / 255.0


def config(folder: Path, **overrides) -> GenerateConfig:
    """A small test-mixed set on the tiny SD 1.x pipeline, 2 steps, shards of 4."""
    values = dict(
        out=str(folder),
        set="test-mixed",
        model="tiny-sd1",
        labeler="stub",
        scorer="brightness",
        num_samples=6,
        steps=2,
        samples_per_shard=4,
        progress=False,
    )
    return GenerateConfig(**{**values, **overrides})


def generate(cfg: GenerateConfig, pipe, **kwargs) -> GenerateReport:
    """`generate_set` with the stub labeler and the brightness scorer."""
    return generate_set(cfg, pipe=pipe, labeler=StubLabeler(VOC_SPLIT1.classes), scorer=BrightnessScorer(), **kwargs)

"""CLIP-IQA on a tiny random CLIPModel with the real tokenizer, the softmax by hand, loading by name,
and keeping the top fraction. Offline."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from groundiff.data.scores import top_fraction
from groundiff.scoring import CLIP_MEAN, CLIP_STD, ClipIqaScorer, Scorer, clip_iqa_probability, load_scorer


def tiny_clip(seed: int = 0) -> CLIPModel:
    """A 1-layer CLIP on the real 49,408-token vocabulary, 32² images in 8² patches, seeded."""
    torch.manual_seed(seed)
    text = {
        "vocab_size": 49408,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).eval()


@pytest.fixture(scope="module")
def clip() -> CLIPModel:
    return tiny_clip()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 40, 48, 3), dtype=np.uint8)  # not square, not 32²


def test_scores_are_probabilities_deterministic_and_batch_independent(clip, tokenizer, images) -> None:
    scorer = ClipIqaScorer(clip, tokenizer, batch_size=2)
    assert isinstance(scorer, Scorer)
    scores = scorer.score(images)
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all() and np.ptp(scores) > 0
    np.testing.assert_array_equal(scores, scorer.score(images))
    single = ClipIqaScorer(clip, tokenizer, batch_size=1).score(images)
    np.testing.assert_allclose(single, scores, atol=1e-6)
    np.testing.assert_allclose(scorer.score(images[2:3]), scores[2:3], atol=1e-6)
    assert scorer.score(images[:0]).shape == (0,)


def test_preprocess_resizes_the_short_side_and_crops_the_centre(clip, tokenizer, images) -> None:
    scorer = ClipIqaScorer(clip, tokenizer)
    assert scorer.image_size == 32
    pixels = scorer.preprocess(images)
    assert pixels.shape == (5, 3, 32, 32) and pixels.dtype == torch.float32
    grey = np.full((1, 32, 32, 3), 128, dtype=np.uint8)  # already 32²: no resampling, only normalization
    expected = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(scorer.preprocess(grey)[0, :, 0, 0], expected)


def test_softmax_by_hand() -> None:
    image = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # (N=3, D=2), not normalized
    text = torch.tensor([[1.0, 0.0], [0.0, 5.0]])  # good ∥ x-axis, bad ∥ y-axis
    e = math.e
    expected = torch.tensor([e / (e + 1), 1 / (1 + e), 0.5])  # cosines (1, 0), (0, 1), (√½, √½) at scale 1
    torch.testing.assert_close(clip_iqa_probability(image, text, 1.0), expected)
    assert clip_iqa_probability(image, text, 100.0)[0] == pytest.approx(1 / (1 + math.exp(-100)))


def test_scorer_applies_the_softmax_to_its_embeddings(clip, tokenizer, images, monkeypatch) -> None:
    scorer = ClipIqaScorer(clip, tokenizer, logit_scale=2.0)
    scorer.text_embeds = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fixed = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])  # (5, 2)
    monkeypatch.setattr(clip, "get_image_features", lambda pixel_values: fixed[: len(pixel_values)])
    # P(good) = sigmoid(2 (cos_good − cos_bad))
    expected = 1 / (1 + np.exp(-2 * np.array([1.0, -1.0, -1.0, 0.0, 1.0])))
    np.testing.assert_allclose(scorer.score(images), expected, rtol=1e-6)


def test_logit_scale_defaults_to_the_model_capped_at_100(tokenizer) -> None:
    model = tiny_clip()
    assert ClipIqaScorer(model, tokenizer).logit_scale == pytest.approx(math.exp(model.config.logit_scale_init_value))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert ClipIqaScorer(model, tokenizer).logit_scale == 100.0


def test_load_scorer_from_a_folder_and_by_name(clip, tmp_path, images) -> None:
    clip.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    scorer = load_scorer(str(tmp_path), batch_size=4)
    assert isinstance(scorer, ClipIqaScorer) and scorer.name == str(tmp_path)
    assert scorer.mean.flatten().tolist() == [0.5] * 3 and scorer.batch_size == 4
    assert scorer.score(images).shape == (5,)
    assert load_scorer("none") is None


def test_load_scorer_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_scorer(str(tmp_path / "missing"))
    with pytest.raises(OSError, match="huggingface-cli download nobody/no-such-clip"):
        load_scorer("nobody/no-such-clip")  # offline (HF_HUB_OFFLINE=1) and not cached
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # importing it raises ImportError
    with pytest.raises(ImportError, match="pip install pyiqa"):
        load_scorer("clipiqa+")


def test_pyiqa_backend_when_installed(monkeypatch, images) -> None:
    def create_metric(name: str, device: str, as_loss: bool):  # noqa: ANN202
        assert (name, device, as_loss) == ("clipiqa+", "cpu", False)
        return lambda x: x.mean(dim=(1, 2, 3))[:, None]  # (N, 1) like pyiqa

    monkeypatch.setitem(sys.modules, "pyiqa", types.SimpleNamespace(create_metric=create_metric))
    scorer = load_scorer("clipiqa+", batch_size=2)
    assert scorer is not None and scorer.name == "pyiqa:clipiqa+"
    np.testing.assert_allclose(scorer.score(images), images.mean(axis=(1, 2, 3)) / 255, rtol=1e-5)


def test_top_fraction() -> None:
    assert top_fraction([0.1, 0.5, 0.5, 0.9, 0.2]).tolist() == [1, 2, 3, 4]  # 80% of 5 = 4
    assert top_fraction([0.5, 0.7, 0.5, 0.5, 0.5], 0.4).tolist() == [0, 1]  # ties: the earlier index
    assert top_fraction(np.linspace(0, 1, 10), 0.7).tolist() == [3, 4, 5, 6, 7, 8, 9]  # 0.7 × 10 is 7, not 8
    assert top_fraction([], 0.8).tolist() == []
    assert top_fraction([0.3, 0.1], 1.0).tolist() == [0, 1]
    with pytest.raises(ValueError, match="fraction=0"):
        top_fraction([0.1], 0)
    with pytest.raises(ValueError, match="1 scores are NaN"):
        top_fraction([0.1, float("nan")])

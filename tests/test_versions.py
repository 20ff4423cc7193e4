"""The mini world's U-Net versions (miniworld-ft, miniworld-v2, miniworld-crowd): styles, configs, loading by name."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from groundiff.miniworld.renderer import render_scene
from groundiff.miniworld.truth import TruthSetConfig
from groundiff.miniworld.versions import VERSIONS, version_named
from groundiff.worlds import get_world


def test_a_textured_scene_keeps_its_plain_twins_objects_and_masks():
    plain = render_scene(["red disc", "blue ring"], 5)
    textured = render_scene(["red disc", "blue ring"], 5, style="textured")
    assert plain.objects == textured.objects
    for name in plain.masks:
        assert np.array_equal(plain.masks[name], textured.masks[name])
        # Objects are drawn the same; only the background changes.
        assert np.abs(plain.image[plain.masks[name]].astype(int) - textured.image[plain.masks[name]]).max() <= 12
    background = ~(plain.masks["red disc"] | plain.masks["blue ring"])
    assert np.abs(plain.image[background].astype(int) - textured.image[background]).mean() > 5
    with pytest.raises(ValueError, match="Unknown style 'stripes'"):
        render_scene(["red disc"], 5, style="stripes")


def test_versions_share_block_widths_and_differ_where_sd2_differs():
    from groundiff.miniworld import models

    v1, v2 = models.build_unet("v1"), models.build_unet("v2")
    assert v1.config.block_out_channels == v2.config.block_out_channels
    assert not v1.config.use_linear_projection and v2.config.use_linear_projection
    assert version_named("miniworld-v2").prediction_type == "v_prediction"
    assert version_named("unet-ft").start == "miniworld"
    assert len({v.folder for v in VERSIONS}) == len(VERSIONS)
    with pytest.raises(ValueError, match="choose one of miniworld, miniworld-ft, miniworld-v2"):
        version_named("miniworld-v3")


def test_truth_sets_name_their_version_and_plain_sets_keep_their_identity():
    plain = TruthSetConfig(out="x").content()
    assert plain["model"] == "miniworld" and "style" not in plain
    textured = TruthSetConfig(out="x", model="miniworld-ft", style="textured").content()
    assert textured["model"] == "miniworld-ft" and textured["style"] == "textured"
    with pytest.raises(ValueError, match="Unknown mini-world model"):
        TruthSetConfig(out="x", model="sd15")


@pytest.mark.parametrize("name", ["miniworld-ft", "miniworld-v2", "miniworld-crowd"])
def test_versions_are_worlds_with_the_mini_worlds_parts_and_their_own_unet(name):
    world = get_world(name)
    base = get_world("miniworld")
    assert world is not None and base is not None
    assert world.vocabulary() == base.vocabulary() and world.steps == base.steps
    assert world.grounding_checkpoint is None  # no grounding model ships for their features
    pipe = world.pipeline(device="cpu")
    version = version_named(name)
    assert pipe.scheduler.config.prediction_type == version.prediction_type
    assert pipe.unet.config.use_linear_projection == (version.architecture == "v2")
    shipped = base.pipeline(device="cpu")
    assert pipe.text_encoder.state_dict().keys() == shipped.text_encoder.state_dict().keys()
    differs = [k for k, v in pipe.unet.state_dict().items() if not np.array_equal(v, shipped.unet.state_dict()[k])]
    assert differs  # its own weights, not the shipped U-Net's


def test_shipped_weights_fit_the_budget():
    """No weight file over 10 MB and all of them together at most 50 MB (the project's rule)."""
    from groundiff.miniworld.weights import PACKAGE_DIR

    sizes = {path: path.stat().st_size for path in PACKAGE_DIR.rglob("*.safetensors")}
    assert {p.parent.name for p in sizes} >= {"unet", "unet-ft", "unet-v2", "unet-crowd", "grounding"}
    too_big = {str(p): s for p, s in sizes.items() if s > 10_000_000}
    assert not too_big
    assert sum(sizes.values()) <= 50_000_000


def test_the_crowd_version_trains_on_every_object_count_with_captions_naming_each_object(tmp_path):
    import dataclasses

    import torch

    from groundiff.miniworld.training.unet import CaptionStates, training_scenes
    from groundiff.miniworld.vocabulary import CLASSES, make_caption
    from groundiff.miniworld.weights import WEIGHTS_DIR

    crowd = dataclasses.replace(version_named("miniworld-crowd"), scenes=8)
    assert crowd.start == "miniworld" and crowd.objects == (1, 2, 3, 4)
    images, classes = training_scenes(crowd, tmp_path)
    assert images.shape[0] == 8 and classes.shape == (8, 4)
    assert [int((row >= 0).sum()) for row in classes] == [1, 1, 2, 2, 3, 3, 4, 4]  # equal shares, -1 padded
    pairs_images, pairs_classes = training_scenes(dataclasses.replace(version_named("miniworld"), scenes=4), tmp_path)
    assert pairs_classes.shape == (4, 2)  # pair versions read the render set they were trained on

    captions = CaptionStates(WEIGHTS_DIR / "pipeline", pairs_only=False)
    states = captions(torch.from_numpy(classes[[0, 7]]), torch.Generator().manual_seed(0))
    one = make_caption([CLASSES[int(classes[0, 0])]])
    assert torch.allclose(states[0], captions.encode([one])[0], atol=1e-5)
    four = [CLASSES[int(i)] for i in classes[7]]
    orders = [captions.encode([make_caption([four[j] for j in p])])[0] for p in itertools.permutations(range(4))]
    assert any(torch.allclose(states[1], order, atol=1e-5) for order in orders)  # its four names, in some order

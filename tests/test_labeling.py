"""Mask R-CNN labeler: COCO→VOC names, post-processing of fabricated detections, a random-weight network
end to end, and the errors of the labeler registry. Offline, no pretrained weights."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from torchvision.models.detection import (
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from groundiff.labeling import Labeler, LabelResult
from groundiff.labeling.maskrcnn import (
    COCO_TO_VOC,
    MaskRCNNConfig,
    MaskRCNNLabeler,
    build_maskrcnn,
    detections_to_result,
    label_names,
)
from groundiff.labeling.registry import LABELERS, load_labeler

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
COCO = MaskRCNN_ResNet50_FPN_V2_Weights.DEFAULT.meta["categories"]
NAMES = label_names(COCO)


class _TinyBackbone(torch.nn.Module):
    """One strided conv: (B, 3, H, W) → {"0": (B, 8, H/4, W/4)}."""

    out_channels = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"0": self.conv(x).relu()}


def tiny_maskrcnn(seed: int = 0) -> MaskRCNN:
    """A torchvision MaskRCNN over the COCO label space (91 labels) with tiny seeded parts: 32² images in ms."""
    torch.manual_seed(seed)
    return MaskRCNN(
        _TinyBackbone(),
        min_size=32,
        max_size=32,
        rpn_anchor_generator=AnchorGenerator(sizes=((8, 16),), aspect_ratios=((0.5, 1.0, 2.0),)),
        rpn_head=RPNHead(8, 6),
        rpn_pre_nms_top_n_test=20,
        rpn_post_nms_top_n_test=10,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(8 * 7 * 7, 16),
        box_predictor=FastRCNNPredictor(16, len(COCO)),
        box_score_thresh=0.0,
        box_detections_per_img=10,
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        mask_head=MaskRCNNHeads(8, (8,), 1),
        mask_predictor=MaskRCNNPredictor(8, 8, len(COCO)),
    )


@pytest.fixture(scope="module")
def labeler() -> MaskRCNNLabeler:
    return MaskRCNNLabeler(tiny_maskrcnn(), config=MaskRCNNConfig(score_threshold=0.0, batch_size=2))


def detection(*instances: tuple[str, float, np.ndarray]) -> dict[str, torch.Tensor]:
    """A fabricated torchvision detection from (COCO name, score, (H, W) mask probabilities) instances."""
    masks = np.stack([mask for _, _, mask in instances]).astype(np.float32)[:, None]  # (K, 1, H, W)
    return {
        "boxes": torch.zeros(len(instances), 4),
        "labels": torch.tensor([COCO.index(name) for name, _, _ in instances]),
        "scores": torch.tensor([score for _, score, _ in instances]),
        "masks": torch.from_numpy(masks),
    }


def block(top: int, left: int, size: int = 2, value: float = 0.9) -> np.ndarray:
    """(8, 8) mask probabilities: `value` in a size×size square at (top, left), 0.1 elsewhere."""
    mask = np.full((8, 8), 0.1, dtype=np.float32)
    mask[top : top + size, left : left + size] = value
    return mask


def test_coco_to_voc_covers_all_voc_classes() -> None:
    assert sorted(COCO_TO_VOC.values()) == sorted(VOC_CLASSES)
    for weights in (MaskRCNN_ResNet50_FPN_V2_Weights.DEFAULT, MaskRCNN_ResNet50_FPN_Weights.DEFAULT):
        assert set(COCO_TO_VOC) <= set(weights.meta["categories"])
    assert NAMES[COCO.index("couch")] == "sofa" and NAMES[COCO.index("truck")] == "truck"


def test_vocabulary_has_voc_names_and_no_placeholders(labeler: MaskRCNNLabeler) -> None:
    assert isinstance(labeler, Labeler)
    assert set(VOC_CLASSES) <= set(labeler.vocabulary)
    assert len(labeler.vocabulary) == 80
    assert not {"couch", "tv", "N/A", "__background__"} & set(labeler.vocabulary)


def test_union_merges_instances_and_top1_keeps_the_best() -> None:
    det = detection(("cat", 0.6, block(0, 0)), ("cat", 0.9, block(4, 4)), ("couch", 0.8, block(2, 2)))
    union = detections_to_result(det, ["cat", "sofa"], NAMES, MaskRCNNConfig())
    top1 = detections_to_result(det, ["cat", "sofa"], NAMES, MaskRCNNConfig(merge="top1"))
    assert union.masks["cat"].dtype == bool and union.masks["cat"].shape == (8, 8)
    assert union.masks["cat"].sum() == 8 and union.masks["cat"][0, 0] and union.masks["cat"][4, 4]
    assert top1.masks["cat"].sum() == 4 and top1.masks["cat"][4, 4] and not top1.masks["cat"][0, 0]
    assert union.scores == top1.scores == pytest.approx({"cat": 0.9, "sofa": 0.8})
    np.testing.assert_array_equal(union.masks["sofa"], block(2, 2) > 0.5)
    assert det["masks"].max() == pytest.approx(0.9)  # the input is left as it was


def test_thresholds_unrequested_classes_and_missing() -> None:
    det = detection(
        ("dog", 0.4, block(0, 0)),  # below the default score threshold 0.5
        ("person", 0.99, block(2, 2)),  # confident, but not asked for
        ("cat", 0.9, block(4, 4, value=0.3)),  # confident, but its mask is below the mask threshold
        ("cat", 0.7, block(6, 6)),
    )
    result = detections_to_result(det, ["dog", "cat", "horse"], NAMES, MaskRCNNConfig())
    assert set(result.masks) == {"cat"} and result.scores["cat"] == pytest.approx(0.9)
    assert result.masks["cat"].sum() == 4 and result.masks["cat"][6, 6]
    assert result.missing(["dog", "cat", "horse"]) == ["dog", "horse"]
    low = detections_to_result(det, ["dog"], NAMES, MaskRCNNConfig(score_threshold=0.3))
    assert set(low.masks) == {"dog"}
    empty = detections_to_result(det, ["cat"], NAMES, MaskRCNNConfig(merge="top1", mask_threshold=0.95))
    assert empty.missing(["cat"]) == ["cat"]


def test_random_weight_maskrcnn_end_to_end(labeler: MaskRCNNLabeler) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    class_names = [[*VOC_CLASSES, "fire hydrant"], ["dog", "cat"], ["person"]]  # COCO-only classes work too
    results = labeler.label(images, class_names)
    assert len(results) == 3 and all(isinstance(r, LabelResult) for r in results)
    assert results[0].masks, "a random network with no score threshold finds something"
    for result, names in zip(results, class_names, strict=True):
        assert set(result.masks) == set(result.scores) and set(result.masks) <= set(names)
        for name, mask in result.masks.items():
            assert mask.shape == (32, 32) and mask.dtype == bool and mask.any()
            assert 0.0 <= result.scores[name] <= 1.0
    again = labeler.label(images[:1], class_names[:1])[0]  # batch of 1: same as in the batch of 2
    assert again.scores == pytest.approx(results[0].scores, abs=1e-5)


def test_builds_torchvision_architectures_without_weights() -> None:
    for version in ("v1", "v2"):
        model = build_maskrcnn(version, pretrained=False, min_size=64, max_size=64)
        assert isinstance(model, MaskRCNN) and model.roi_heads.mask_predictor is not None


@pytest.mark.parametrize(
    ("name", "hint"), [("couch", "did you mean 'sofa'"), ("tv monitor", "did you mean 'tvmonitor'")]
)
def test_unknown_class_suggests_the_closest(labeler: MaskRCNNLabeler, name: str, hint: str) -> None:
    images = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=f"cannot label '{name}': {hint}"):
        labeler.label(images, [["cat", name]])
    with pytest.raises(ValueError, match="Its classes are person, bicycle"):
        labeler.check_classes(["unicorn"])


def test_bad_inputs(labeler: MaskRCNNLabeler) -> None:
    with pytest.raises(ValueError, match="2 images but 1 class lists"):
        labeler.label(np.zeros((2, 32, 32, 3), dtype=np.uint8), [["cat"]])
    with pytest.raises(ValueError, match="dtype uint8"):
        labeler.label(np.zeros((1, 32, 32, 3), dtype=np.float32), [["cat"]])
    with pytest.raises(ValueError, match="merge='best'"):
        MaskRCNNConfig(merge="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score_threshold=1.5"):
        MaskRCNNConfig(score_threshold=1.5)


def test_registry_unknown_name_lists_the_labelers() -> None:
    with pytest.raises(ValueError, match="Did you mean 'maskrcnn'.*Known labelers: maskrcnn, maskrcnn-v1, miniworld"):
        load_labeler("mask-rcnn")
    assert set(LABELERS) == {"maskrcnn", "maskrcnn-v1"}  # worlds bring their own (see groundiff.worlds)


def test_registry_says_how_to_get_missing_weights(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="not in the torch hub cache") as error:
        load_labeler("maskrcnn-v1", score_threshold=0.05, merge="top1")
    assert str(tmp_path / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth") in str(error.value)
    assert "MaskRCNN_ResNet50_FPN_Weights" in str(error.value)

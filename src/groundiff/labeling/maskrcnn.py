"""Mask R-CNN (torchvision, trained on COCO) behind the `Labeler` interface, with COCO names mapped to VOC.

Two steps, split so that the second is testable without a trained network:
1. `MaskRCNNLabeler.detect` runs the network: images → torchvision detections (boxes, labels,
   scores, masks per instance).
2. `detections_to_result` (pure) turns one image's detections into a `LabelResult`: keep the
   instances above the score threshold whose class was asked for, binarize their masks and merge
   them per class (`union`) or keep the best one (`top1`).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torchvision.models import WeightsEnum
from torchvision.models.detection import (
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.ops.misc import FrozenBatchNorm2d

from groundiff.labeling.base import LabelResult

log = logging.getLogger(__name__)

MaskRCNNVersion = Literal["v1", "v2"]
MergeMode = Literal["union", "top1"]

# COCO category name → Pascal VOC class name, for the 20 VOC classes (all of them are COCO classes).
COCO_TO_VOC: dict[str, str] = {
    "airplane": "aeroplane",
    "bicycle": "bicycle",
    "bird": "bird",
    "boat": "boat",
    "bottle": "bottle",
    "bus": "bus",
    "car": "car",
    "cat": "cat",
    "chair": "chair",
    "cow": "cow",
    "dining table": "diningtable",
    "dog": "dog",
    "horse": "horse",
    "motorcycle": "motorbike",
    "person": "person",
    "potted plant": "pottedplant",
    "sheep": "sheep",
    "couch": "sofa",
    "train": "train",
    "tv": "tvmonitor",
}

_BUILDERS = {"v1": maskrcnn_resnet50_fpn, "v2": maskrcnn_resnet50_fpn_v2}
_WEIGHTS: dict[str, WeightsEnum] = {
    "v1": MaskRCNN_ResNet50_FPN_Weights.DEFAULT,
    "v2": MaskRCNN_ResNet50_FPN_V2_Weights.DEFAULT,
}
# Placeholders in torchvision's category list (indices the COCO label map skips).
_NOT_A_CLASS = ("__background__", "N/A")


@dataclass(frozen=True)
class MaskRCNNConfig:
    """How detections become class masks.

    Attributes:
        score_threshold: keep instances whose detection score is above this, in [0, 1).
        mask_threshold: a pixel belongs to an instance where its mask probability is above this, in [0, 1).
        merge: `union` (default) merges every kept instance of a class into its mask; `top1` keeps
            only the top-scoring instance, the reference's behaviour (it used `score_threshold=0.05`
            with an mmdetection Swin-S Mask R-CNN).
        batch_size: images per forward pass, ≥ 1.
        device: torch device the network runs on, e.g. "cpu" or "cuda".
    """

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    merge: MergeMode = "union"
    batch_size: int = 4
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("score_threshold", "mask_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"MaskRCNNConfig.{name}={value} is outside [0, 1); pass e.g. 0.5.")
        if self.merge not in ("union", "top1"):
            raise ValueError(f"MaskRCNNConfig.merge={self.merge!r} is not a merge mode; use 'union' or 'top1'.")
        if self.batch_size < 1:
            raise ValueError(f"MaskRCNNConfig.batch_size={self.batch_size} must be at least 1.")


def label_names(categories: Sequence[str]) -> list[str]:
    """Per label index, the labeler's name for it: COCO names with VOC renames applied (placeholders kept)."""
    return [COCO_TO_VOC.get(name, name) for name in categories]


def detections_to_result(
    detection: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    names: Sequence[str],
    config: MaskRCNNConfig,
) -> LabelResult:
    """One image's torchvision detections → masks of the requested classes.

    Args:
        detection: torchvision output for one image: `labels` (K,) int64 label indices, `scores`
            (K,) float in [0, 1], `masks` (K, 1, H, W) float probabilities in [0, 1] (`boxes` unused).
        class_names: the classes to look for; detections of other classes are ignored.
        names: label index → class name (see `label_names`).
        config: thresholds and merge mode.

    Returns:
        masks (H, W) bool and scores (the best kept instance's score) for each requested class
        found with a non-empty mask; `LabelResult.missing` lists the others.
    """
    result = LabelResult()
    labels = detection["labels"].tolist()
    scores = detection["scores"].tolist()
    masks = (detection["masks"][:, 0] > config.mask_threshold).cpu().numpy()  # (K, H, W) bool
    wanted = set(class_names)
    for k in sorted(range(len(labels)), key=lambda k: -scores[k]):
        name = names[labels[k]]
        if name not in wanted or scores[k] <= config.score_threshold:
            continue
        if name not in result.masks:
            result.masks[name] = masks[k].copy()
            result.scores[name] = float(scores[k])
        elif config.merge == "union":
            result.masks[name] |= masks[k]
    for name in [name for name, mask in result.masks.items() if not mask.any()]:
        del result.masks[name], result.scores[name]
    return result


def _weights_file(weights: WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def build_maskrcnn(version: MaskRCNNVersion = "v2", *, pretrained: bool = True, **kwargs: Any) -> MaskRCNN:
    """torchvision's ResNet-50 FPN Mask R-CNN, `v2` or `v1`, with COCO weights from the torch hub cache.

    The weights are loaded as a plain state dict with `weights_only=True` (torchvision's own loader
    unpickles them unrestricted, which can run code hidden in the file), into the network
    torchvision builds for them: v1's ResNet has frozen batch norms with eps 0. With `pretrained=False`
    the network has random weights (tests); `kwargs` go to the torchvision builder (e.g. `min_size`,
    `max_size`, `box_score_thresh`). Raises RuntimeError saying how to get the weights when they are
    neither cached nor downloadable.
    """
    if version not in _BUILDERS:
        raise ValueError(f"Unknown Mask R-CNN version {version!r}; use 'v2' (default) or 'v1'.")
    if not pretrained:
        return _BUILDERS[version](weights=None, weights_backbone=None, **kwargs)
    weights = _WEIGHTS[version]
    classes = len(weights.meta["categories"])
    model = _BUILDERS[version](weights=None, weights_backbone=None, num_classes=classes, **kwargs)
    if version == "v1":
        _freeze_batch_norms(model.backbone.body)
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True, weights_only=True)
    except OSError as err:  # urllib's URLError is an OSError
        cached = _weights_file(weights)
        if cached.exists():
            raise
        fetch = f"import torch; torch.hub.load_state_dict_from_url({weights.url!r}, weights_only=True)"
        raise RuntimeError(
            f"The COCO Mask R-CNN {version} weights ({type(weights).__name__}.DEFAULT) are not in the torch hub "
            f"cache ({cached}) and downloading {weights.url} failed ({err}). On a machine with network, run "
            f'`python -c "{fetch}"` (or download the URL) and copy the file to {cached}; set TORCH_HOME to use '
            f"another cache folder."
        ) from err
    model.load_state_dict(state)
    return model


def _freeze_batch_norms(module: torch.nn.Module) -> None:
    """Replace each BatchNorm2d by a FrozenBatchNorm2d with eps 0, as torchvision builds the COCO v1 network."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=0.0))
        else:
            _freeze_batch_norms(child)


class MaskRCNNLabeler:
    """Segments COCO classes (VOC names where VOC has them) in (N, H, W, 3) uint8 RGB images.

    Pass an already-built `MaskRCNN` (e.g. random weights in tests), or nothing to build the
    pretrained `version` ("v2": `MaskRCNN_ResNet50_FPN_V2_Weights.DEFAULT`, "v1": the original
    `maskrcnn_resnet50_fpn`). When building, the network's own box score threshold is set to
    `config.score_threshold`, so masks are only predicted (and pasted) for boxes that are kept.
    """

    def __init__(
        self,
        model: MaskRCNN | None = None,
        *,
        version: MaskRCNNVersion = "v2",
        config: MaskRCNNConfig | None = None,
        categories: Sequence[str] | None = None,
    ) -> None:
        self.config = config or MaskRCNNConfig()
        if model is None:
            model = build_maskrcnn(version, box_score_thresh=self.config.score_threshold)
        self.model = model.eval().to(self.config.device)
        self.names = label_names(categories if categories is not None else _WEIGHTS[version].meta["categories"])
        self.vocabulary: tuple[str, ...] = tuple(name for name in self.names if name not in _NOT_A_CLASS)

    def check_classes(self, class_names: Sequence[str]) -> None:
        """Raise ValueError naming the first class this labeler cannot find, and the closest it can."""
        for name in class_names:
            if name not in self.vocabulary:
                close = [COCO_TO_VOC[name]] if name in COCO_TO_VOC else difflib.get_close_matches(name, self.vocabulary)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"Mask R-CNN (COCO) cannot label {name!r}: {hint}Its classes are {', '.join(self.vocabulary)}."
                )

    @torch.no_grad()
    def detect(self, images: np.ndarray) -> list[dict[str, torch.Tensor]]:
        """(N, H, W, 3) uint8 RGB in [0, 255] → N torchvision detection dicts (see `detections_to_result`), on CPU."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"Expected images of shape (N, H, W, 3) and dtype uint8, got {images.shape} {images.dtype}."
            )
        detections = []
        for start in range(0, len(images), self.config.batch_size):
            batch = torch.from_numpy(images[start : start + self.config.batch_size]).to(self.config.device)
            batch = batch.permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W) in [0, 1]
            for out in self.model(list(batch)):
                detections.append({key: value.cpu() for key, value in out.items()})
        return detections

    def label(self, images: np.ndarray, class_names: Sequence[Sequence[str]]) -> list[LabelResult]:
        """One `LabelResult` per image with the masks of its requested classes that were found."""
        if len(images) != len(class_names):
            raise ValueError(f"Got {len(images)} images but {len(class_names)} class lists; pass one list per image.")
        for names in class_names:
            self.check_classes(names)
        return [
            detections_to_result(detection, names, self.names, self.config)
            for detection, names in zip(self.detect(images), class_names, strict=True)
        ]

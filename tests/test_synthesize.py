"""`groundiff synthesize` and the dataset exporter: COCO and VOC files equal the masks they came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import config, generate
from groundiff.apps.synthesize import SynthesizeConfig, read_class_list, synthesize
from groundiff.cli import main
from groundiff.data.coco import CocoBuilder
from groundiff.data.export import (
    IGNORE_INDEX,
    export_set,
    read_index_png,
    semantic_index,
    voc_palette,
)
from groundiff.data.records import SampleRecord
from groundiff.data.shards import iter_records

CLASSES = ["red ring", "blue cross", "green triangle"]


def _records(count: int = 5, side: int = 24) -> list[SampleRecord]:
    """Records of two classes each, with overlapping random blobs (one image with an empty mask)."""
    rng = np.random.default_rng(0)
    records = []
    for index in range(count):
        names = [CLASSES[index % 3], CLASSES[(index + 1) % 3]]
        masks = [rng.random((side, side)) > 0.7 for _ in names]
        if index == 2:
            masks[1][:] = False
        image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        records.append(SampleRecord(index * 7, image, masks=masks, meta={"prompt": "p", "classes": names}))
    return records


def test_coco_and_voc_files_equal_the_masks(tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    coco_api = pytest.importorskip("pycocotools.coco")
    records = _records()
    report = export_set(lambda: records, tmp_path, classes=CLASSES, progress=False)
    assert report.images == 5
    instances = coco_api.COCO(str(tmp_path / "coco" / "instances.json"))
    semantic = json.loads((tmp_path / "coco" / "semantic.json").read_text())
    assert [c["name"] for c in instances.loadCats(instances.getCatIds())] == CLASSES
    assert (tmp_path / "voc" / "classes.txt").read_text().split("\n")[:4] == ["background", *CLASSES]
    for image_id, record in enumerate(records, start=1):
        info = instances.loadImgs(image_id)[0]
        assert info["file_name"] == f"{record.key}.png"
        found = {
            instances.loadCats(a["category_id"])[0]["name"]: instances.annToMask(a).astype(bool)
            for a in instances.loadAnns(instances.getAnnIds(imgIds=image_id))
        }
        expected = {name: mask for name, mask in zip(record.classes, record.masks, strict=True) if mask.any()}
        assert found.keys() == expected.keys()
        for name, mask in expected.items():
            assert (found[name] == mask).all()
        index = read_index_png(tmp_path / "voc" / "SegmentationClass" / info["file_name"])
        assert (index == semantic_index(dict(zip(record.classes, record.masks, strict=True)), CLASSES)).all()
        overlap = record.masks[0] & record.masks[1]
        assert (index[overlap] == IGNORE_INDEX).all() and overlap.any() == (index == IGNORE_INDEX).any()
        for annotation in (a for a in semantic["annotations"] if a["image_id"] == image_id):
            rle = mask_api.frPyObjects(annotation["segmentation"], *index.shape)
            assert (mask_api.decode(rle).astype(bool) == (index == annotation["category_id"])).all()
        assert (np.asarray(Image.open(tmp_path / "images" / info["file_name"])) == record.image).all()
    assert (tmp_path / "voc" / "ImageSets" / "Segmentation" / "all.txt").read_text().split() == [r.key for r in records]
    exported = json.loads((tmp_path / "export.json").read_text())
    assert exported["per_class"]["blue cross"]["images"] == sum("blue cross" in r.classes for r in records)


def test_index_png_has_the_voc_palette_and_every_index(tmp_path):
    masks = {name: np.zeros((4, 6), bool) for name in CLASSES}
    for k, name in enumerate(CLASSES):
        masks[name][k, :] = True
    index = semantic_index(masks, CLASSES)
    assert index[:3, 0].tolist() == [1, 2, 3] and index[3].max() == 0
    record = SampleRecord(0, np.zeros((4, 6, 3), np.uint8), masks=list(masks.values()), meta={"classes": CLASSES})
    export_set(lambda: [record], tmp_path, classes=CLASSES, formats=("voc",), progress=False)
    picture = Image.open(tmp_path / "voc" / "SegmentationClass" / "00000000.png")
    assert picture.mode == "P" and picture.getpalette()[3:6] == [128, 0, 0] == voc_palette()[3:6]
    assert (np.array(picture) == index).all()
    assert not (tmp_path / "coco" / "instances.json").exists()


def test_exporter_names_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="not among the classes"):
        semantic_index({"cat": np.ones((2, 2), bool)}, CLASSES)
    with pytest.raises(ValueError, match="Unknown export format 'yolo'"):
        export_set(lambda: [], tmp_path, classes=CLASSES, formats=("yolo",))
    unlabelled = SampleRecord(0, np.zeros((2, 2, 3), np.uint8), meta={"classes": ["red ring"]})
    with pytest.raises(ValueError, match="--labeler none"):
        export_set(lambda: [unlabelled], tmp_path, classes=CLASSES, progress=False)
    with pytest.raises(ValueError, match="not among the exported classes"):
        CocoBuilder(["a"]).add_image("x.png", {"b": np.ones((2, 2), bool)})


def test_an_existing_labelled_set_converts_to_coco_and_voc(tmp_path, sd1_pipe):
    generate(config(tmp_path / "set", num_samples=5), sd1_pipe)
    report = synthesize(SynthesizeConfig(out=str(tmp_path / "out"), data=str(tmp_path / "set"), labels="set"))
    records = sorted(iter_records(tmp_path / "set", features=False), key=lambda r: r.index)
    assert report.complete and report.kept == report.generated == 5
    assert sum(row["kept"] for row in report.per_class.values()) == 10
    classes = (tmp_path / "out" / "dataset" / "voc" / "classes.txt").read_text().split("\n")[1:-1]
    for record in records:
        index = read_index_png(tmp_path / "out" / "dataset" / "voc" / "SegmentationClass" / f"{record.key}.png")
        assert (index == semantic_index(dict(zip(record.classes, record.masks, strict=True)), classes)).all()
    manifest = json.loads((tmp_path / "out" / "synthesis.json").read_text())
    assert manifest["kept"] == 5 and manifest["config"]["labels"] == "set"


def test_class_lists_come_from_flags_or_files(tmp_path):
    listed = tmp_path / "classes.txt"
    listed.write_text("# unseen\nred ring\n\nblue cross\n")
    assert read_class_list([str(listed)]) == ["red ring", "blue cross"]
    assert read_class_list(["red ring", " blue cross"]) == ["red ring", "blue cross"]
    with pytest.raises(ValueError, match="'red ring' is listed twice"):
        read_class_list(["red ring", "red ring"])
    with pytest.raises(ValueError, match="Name the classes"):
        SynthesizeConfig(out=str(tmp_path))
    with pytest.raises(ValueError, match="--labels set exports"):
        SynthesizeConfig(classes=("red ring",), labels="set")
    with pytest.raises(ValueError, match="Unknown format 'yolo'"):
        SynthesizeConfig(classes=("red ring",), objects_per_prompt=1, formats=("yolo",))


def test_cli_reports_too_few_classes_in_one_line_before_loading_anything(tmp_path, capsys):
    code = main(["synthesize", "--classes", "red ring", "--out", str(tmp_path / "x")])
    error = capsys.readouterr().err
    assert code == 2 and "names 2 distinct classes but --classes lists 1" in error and "--objects-per-prompt" in error
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_synthesis_in_two_workers_and_a_resume_gives_the_same_dataset(tmp_path):
    """The mini world end to end: one run, and two workers of which the first is run, then the second,
    after a labelled shard was lost, give the same COCO and VOC files."""
    from groundiff.sd.pipelines import load_pipeline

    pipe = load_pipeline("miniworld", device="cpu")
    fields = dict(classes=("red ring", "blue cross", "blue disc"), num_samples=6, batch_size=3, progress=False)
    whole = synthesize(SynthesizeConfig(out=str(tmp_path / "whole"), **fields), pipe=pipe)
    assert whole.complete and 0 < whole.kept <= 6
    split = SynthesizeConfig(out=str(tmp_path / "split"), **fields)
    assert not synthesize(split, worker=0, workers=2, pipe=pipe).complete
    assert synthesize(split, worker=1, workers=2, pipe=pipe).complete
    for shard in (tmp_path / "split" / "labelled").glob("*.tar"):
        shard.unlink()  # a lost labelling step is redone
    (tmp_path / "split" / "labelled" / "manifest.json").unlink()
    again = synthesize(split, worker=1, workers=2, pipe=pipe)
    assert again.per_class == whole.per_class
    ours, theirs = (Path(tmp_path / name / "dataset") for name in ("split", "whole"))
    for path in sorted((theirs / "voc" / "SegmentationClass").glob("*.png")):
        agree = read_index_png(path) == read_index_png(ours / "voc" / "SegmentationClass" / path.name)
        assert agree.mean() > 0.99  # features are float sums: another batch split may move a boundary pixel
    documents = [json.loads((d / "coco" / "instances.json").read_text()) for d in (ours, theirs)]
    assert [i["file_name"] for i in documents[0]["images"]] == [i["file_name"] for i in documents[1]["images"]]

"""The mini world's shipped grounding checkpoint: `groundiff ground "<prompt>"` works right after install,
its masks match the exact objects, and the page logic (`groundiff serve`) answers good and bad requests."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from groundiff.apps.serve import EXAMPLE_PROMPT, Grounder, RequestError, check_request, parse_objects
from groundiff.cli import main
from groundiff.data.coco import coco_document, rle_decode, rle_encode
from groundiff.ground import ground, resolve_checkpoint
from groundiff.miniworld.colour_threshold import colour_threshold_masks
from groundiff.miniworld.vocabulary import SEEN_CLASSES, split_class_name
from groundiff.miniworld.weights import GROUNDING_DIR
from groundiff.model.checkpoint import load_grounding_model

PROMPT = EXAMPLE_PROMPT  # "a photograph of a yellow triangle and a green cross"


@pytest.fixture(scope="module")
def grounder() -> Grounder:
    from groundiff.worlds import get_world

    model, meta = load_grounding_model(GROUNDING_DIR)
    world = get_world("miniworld")
    assert world is not None
    return Grounder(world.pipeline(device="cpu"), model, meta, max_objects=4)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def test_shipped_checkpoint_is_small_and_found_without_a_flag():
    folder, model = resolve_checkpoint(None, None)
    assert folder == GROUNDING_DIR and model == "miniworld"
    assert (folder / "model.safetensors").stat().st_size < 10_000_000
    with pytest.raises(ValueError, match="ships no grounding checkpoint; pass --checkpoint"):
        resolve_checkpoint(None, "runwayml/stable-diffusion-v1-5")


def test_ground_without_checkpoint_writes_masks(tmp_path, capsys):
    assert main(["ground", PROMPT, "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "image.png",
        "mask_green_cross.png",
        "mask_yellow_triangle.png",
        "overlay.png",
    ]
    assert "yellow triangle" in capsys.readouterr().out


def test_shipped_masks_match_the_objects_drawn(grounder):
    """On images the mini world draws, the shipped model's masks overlap the pixels of each named colour
    (the colour threshold is exact for two objects of two colours). Measured over 16 such prompts: mean
    IoU 0.84, one mask of 32 below 0.5 ("red ring and blue disc" at seed 0, not among them, swaps its
    two masks); the first 6, tested here, 0.87; painting every pixel scores about 0.1."""
    rng = random.Random(0)
    scores = []
    for seed in range(6):
        names = rng.sample(list(SEEN_CLASSES), 2)
        while split_class_name(names[0])[0] == split_class_name(names[1])[0]:
            names = rng.sample(list(SEEN_CLASSES), 2)
        prompt = f"a photograph of a {names[0]} and a {names[1]}"
        result = ground(grounder.pipe, grounder.model, grounder.meta, prompt, objects=names, seed=seed)
        exact = colour_threshold_masks(result.image, names)
        scores += [iou(result.masks[name], exact[i]) for i, name in enumerate(names)]
    assert np.mean(scores) > 0.7, scores


@pytest.mark.parametrize(
    ("prompt", "objects", "message"),
    [
        ("  ", "green cross", "Enter a prompt"),
        (PROMPT, "", "Name the objects"),
        (PROMPT, "green cross, red ring", "“red ring” is not in the prompt"),
        (PROMPT, "green cross, green cross", "listed twice"),
        (PROMPT, ", ".join(f"thing {i}" for i in range(500)), "500 objects asked for; this page grounds at most 4"),
    ],
)
def test_bad_requests_get_a_sentence(prompt, objects, message):
    with pytest.raises(RequestError, match=message):
        check_request(prompt, parse_objects(objects), max_objects=4)


def test_page_answers_a_prompt_with_masks_and_a_coco_file(grounder):
    steps: list[tuple[int, int]] = []
    result = grounder.answer(PROMPT, "", 0, 20, 4.0, on_step=lambda done, total: steps.append((done, total)))
    assert result.ok, result.message  # objects parsed from the prompt
    assert steps == [(i, 20) for i in range(1, 21)]  # what the page's progress bar shows
    assert result.message.startswith("**Grounded** 2 objects")
    assert [caption for _, caption in result.masks] == ["yellow triangle", "green cross"]
    coco = json.loads(Path(next(f for f in result.files if f.endswith("coco.json"))).read_text())
    assert [c["name"] for c in coco["categories"]] == ["yellow triangle", "green cross"]
    for annotation in coco["annotations"]:
        name = coco["categories"][annotation["category_id"] - 1]["name"]
        png = next(f for f in result.files if f.endswith(f"mask_{name.replace(' ', '_')}.png"))
        assert np.array_equal(rle_decode(annotation["segmentation"]), np.array(Image.open(png)) > 0)
    refused = grounder.answer(PROMPT, "green cross, red ring", 0, 20, 4.0)
    assert not refused.ok and "not in the prompt" in refused.message


def test_rle_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for shape, share in [((13, 9), 0.4), ((1, 1), 1.0), ((6, 5), 0.0), ((64, 64), 0.9)]:
        mask = rng.random(shape) < share
        rle = mask_api.frPyObjects(rle_encode(mask), *shape)
        assert np.array_equal(mask_api.decode(rle).astype(bool), mask)
        assert mask_api.area(rle) == mask.sum()


def test_coco_document_lists_every_object_and_skips_empty_masks():
    masks = {"a": np.eye(4, dtype=bool), "b": np.zeros((4, 4), bool)}
    document = coco_document("x.png", masks)
    assert [c["name"] for c in document["categories"]] == ["a", "b"]
    assert len(document["annotations"]) == 1
    assert document["annotations"][0]["bbox"] == [0, 0, 4, 4] and document["annotations"][0]["area"] == 4


def test_shipped_checkpoint_follows_its_recipe():
    """The committed recipe, the `slim` sizes the demo trains, and the shipped checkpoint agree."""
    import yaml

    from groundiff.model.checkpoint import load_checkpoint_meta
    from groundiff.model.config import MODEL_SIZES

    recipe = yaml.safe_load(
        (Path(__file__).parents[1] / "src/groundiff/configs/models/miniworld-grounding.yaml").read_text()
    )
    assert recipe["model"] == MODEL_SIZES["slim"]
    meta = load_checkpoint_meta(GROUNDING_DIR)
    assert {k: meta.model_config[k] for k in recipe["model"]} == recipe["model"]
    assert {k: meta.train_config[k] for k in ("epochs", "batch_size", "lr", "seed", "threads")} == {
        k: recipe[k] for k in ("epochs", "batch_size", "lr", "seed", "threads")
    }


def test_serve_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    assert main(["serve", "--port", "0"]) == 2
    assert 'groundiff serve needs Gradio: pip install "groundiff[web]"' in capsys.readouterr().err


def test_a_given_image_is_grounded_against_its_exact_masks(grounder):
    """Renders the pipeline never drew, read as `groundiff ground --image` reads them (VAE encode, noise,
    one U-Net pass): the masks overlap the exact object masks; measured 0.80-0.94, mean 0.88, on these three."""
    from groundiff.ground import ground_image
    from groundiff.miniworld.renderer import render_scene

    scores = []
    for seed, names in enumerate(
        [["green cross", "yellow triangle"], ["blue ring", "red cross"], ["green disc", "red triangle"]]
    ):
        scene = render_scene(names, seed)
        big = np.array(Image.fromarray(scene.image).resize((160, 160)))  # any size: masks come back at it
        result = ground_image(grounder.pipe, grounder.model, grounder.meta, big, names)
        assert result.masks[names[0]].shape == (160, 160)
        small = {
            name: np.array(Image.fromarray(result.masks[name]).resize(scene.image.shape[:2][::-1])) for name in names
        }
        scores += [iou(small[name], scene.masks[name]) for name in names]
    assert np.mean(scores) > 0.7, scores


def test_ground_an_image_file_from_the_command_line(tmp_path, capsys):
    from groundiff.miniworld.renderer import render_scene

    picture = tmp_path / "render.png"
    Image.fromarray(render_scene(["green cross", "yellow triangle"], 3).image).save(picture)
    out = tmp_path / "out"
    assert main(["ground", "--image", str(picture), "--objects", "green cross,yellow triangle", "--out", str(out)]) == 0
    assert (out / "mask_green_cross.png").exists() and (out / "overlay.png").exists()
    assert main(["ground", "--image", str(picture)]) == 2
    assert "Name the objects to find in" in capsys.readouterr().err
    assert main(["ground", "--image", str(tmp_path / "missing.png"), "--objects", "a"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "text.png").write_text("not an image")
    assert main(["ground", "--image", str(tmp_path / "text.png"), "--objects", "a"]) == 2
    assert "is not an image PIL can read" in capsys.readouterr().err


def test_the_upload_tab_refuses_what_it_cannot_ground(grounder):
    assert "Upload an image first" in grounder.answer_image(None, "a", 0, -1).message
    image = np.zeros((64, 64, 3), np.uint8)
    assert "Name the objects" in grounder.answer_image(image, " , ", 0, -1).message
    assert "at most 4" in grounder.answer_image(image, "a, b, c, d, e", 0, -1).message
    assert "listed twice" in grounder.answer_image(image, "a, A", 0, -1).message  # the drawing tab's check
    assert "Noise step -30 does not exist" in grounder.answer_image(image, "a", 0, -30).message

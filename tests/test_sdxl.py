"""SDXL on a tiny random-weight `StableDiffusionXLPipeline`: loading, capture, class embeddings, replay, and
generate → train → evaluate → ground end to end; the full-size SDXL feature layout from its config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from conftest import config, generate
from groundiff.capture import CaptureConfig, GenerationSettings, capture_features, generate_with_features
from groundiff.capture.hooks import hook_counts
from groundiff.capture.images import features_of_images
from groundiff.capture.replay import stored_maps
from groundiff.capture.sizes import bytes_per_image, feature_shapes
from groundiff.cli import main
from groundiff.evaluation.evaluate import evaluate_checkpoint
from groundiff.ground import ground_image
from groundiff.model.checkpoint import load_grounding_model
from groundiff.sd import tiny as testing
from groundiff.sd.architectures import sdxl_unet_config
from groundiff.sd.pipelines import load_pipeline, load_text_components, pipeline_architecture
from groundiff.sd.sdxl import SDXLTextEncoder, text_components
from groundiff.text import class_embeddings, class_token_positions

PROMPTS = ["a photograph of a dog and a sofa", "a photograph of a pottedplant and a tvmonitor"]
TWO_STEPS = GenerationSettings(num_inference_steps=2)
TEXT_WIDTH = sum(testing.TINY_SDXL_TEXT_WIDTHS)  # 32 + 48
# Tiny SDXL U-Net at 32² images (16² latents), channels (8, 16, 32): per-image (C, H, W) of each block.
TINY_SDXL_SHAPES = {
    "down0": (8, 8, 8),
    "down1": (16, 4, 4),
    "down2": (32, 4, 4),
    "mid": (32, 4, 4),
    "up0": (32, 8, 8),
    "up1": (16, 16, 16),
    "up2": (8, 16, 16),
}
# Full-size SDXL base at 1024² (128² latents), conditional half.
SDXL_SHAPES = {
    "down0": (320, 64, 64),
    "down1": (640, 32, 32),
    "down2": (1280, 32, 32),
    "mid": (1280, 32, 32),
    "up0": (1280, 64, 64),
    "up1": (640, 128, 128),
    "up2": (320, 128, 128),
}
TINY_MODEL = {"level_channels": [4, 8, 8], "width": 32, "heads": 2, "decoder_layers": 1, "ffn_width": 64}


@pytest.fixture(scope="module")
def sdxl_pipe() -> StableDiffusionXLPipeline:
    return load_pipeline("tiny-sdxl", device="cpu")


def run(pipe, capture: CaptureConfig | None = None, settings: GenerationSettings = TWO_STEPS):
    return generate_with_features(pipe, PROMPTS, [0, 1], settings=settings, capture=capture)


def test_tiny_sdxl_is_an_sdxl_pipeline_whose_blocks_are_captured(sdxl_pipe):
    assert isinstance(sdxl_pipe, StableDiffusionXLPipeline)
    assert sdxl_pipe.unet.config.addition_embed_type == "text_time"
    output = run(sdxl_pipe)
    assert output.images.shape == (2, 32, 32, 3) and output.images.dtype == np.uint8
    assert {n: tuple(t.shape) for n, t in output.features.maps[1].items()} == {
        n: (2, *s) for n, s in TINY_SDXL_SHAPES.items()
    }
    assert feature_shapes(dict(sdxl_pipe.unet.config), latent_size=16) == TINY_SDXL_SHAPES


def test_capture_leaves_sdxl_images_and_hooks_as_they_were(sdxl_pipe):
    before = hook_counts(sdxl_pipe.unet)
    generators = [torch.Generator().manual_seed(3)]
    plain = sdxl_pipe(PROMPTS[:1], num_inference_steps=2, guidance_scale=7.5, generator=generators, output_type="np")
    captured = generate_with_features(sdxl_pipe, PROMPTS[:1], [3], settings=TWO_STEPS)
    assert np.array_equal((np.clip(plain.images, 0, 1) * 255).round().astype(np.uint8), captured.images)
    assert hook_counts(sdxl_pipe.unet) == before
    with pytest.raises(RuntimeError, match="boom"), capture_features(sdxl_pipe):
        raise RuntimeError("boom")
    assert hook_counts(sdxl_pipe.unet) == before


def test_text_states_are_both_towers_penultimate_states_as_the_unet_sees_them(sdxl_pipe, tokenizer):
    encoder, _ = text_components(sdxl_pipe)
    assert isinstance(encoder, SDXLTextEncoder) and encoder.config.hidden_size == TEXT_WIDTH
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        ours = encoder(ids)[0]  # (2, 77, 80)
        unet_text = sdxl_pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=False)[0]
    torch.testing.assert_close(ours, unet_text)
    embeddings = class_embeddings(encoder, tokenizer, PROMPTS[1], ["pottedplant", "tvmonitor"])
    assert embeddings.shape == (2, TEXT_WIDTH)
    positions = class_token_positions(tokenizer, PROMPTS[1], ["pottedplant"])[0]  # pot|ted|plant
    torch.testing.assert_close(embeddings[0], unet_text[1, positions].mean(dim=0))


@pytest.mark.parametrize("layout", ["cond", "uncond+cond"])
def test_sdxl_maps_replay_from_stored_unet_inputs_with_pooled_text_and_time_ids(sdxl_pipe, layout):
    capture = CaptureConfig(layout=layout)
    features = run(sdxl_pipe, capture).features
    flat = features.flat(1, maps=False, inputs=True)
    assert flat["step1.input.text"].shape == (77, TEXT_WIDTH) and flat["step1.input.time_ids"].shape == (6,)
    assert flat["step1.input.text_embeds"].shape == (testing.TINY_SDXL_TEXT_WIDTHS[1],)
    replayed = stored_maps(flat, features.timesteps, sdxl_pipe.unet, capture)
    for name, tensor in features.flat(1).items():
        torch.testing.assert_close(replayed[name], tensor, rtol=1e-4, atol=1e-5)


def test_features_of_a_given_image_match_a_replay_of_its_generation_inputs(sdxl_pipe):
    # The micro-conditioning ids and pooled text of one U-Net pass are those the pipeline would use.
    generated = run(sdxl_pipe, CaptureConfig(layout="uncond+cond"))
    given = features_of_images(
        sdxl_pipe, generated.images, PROMPTS, [0, 1], num_inference_steps=2, capture=CaptureConfig(layout="uncond+cond")
    )
    for name in ("text", "text_embeds", "time_ids", "text_embeds_uncond"):
        torch.testing.assert_close(given.features.inputs[1][name], generated.features.inputs[1][name])
    assert {n: tuple(t.shape[1:]) for n, t in given.features.maps[1].items()} == {
        n: (2 * c, h, w) for n, (c, h, w) in TINY_SDXL_SHAPES.items()
    }


def test_the_pipeline_class_follows_the_folder_file_or_caller(sdxl_pipe, tmp_path):
    sdxl_folder, sd_folder = tmp_path / "sdxl", tmp_path / "sd"
    sdxl_pipe.save_pretrained(sdxl_folder)
    testing.tiny_pipeline("sd1").save_pretrained(sd_folder)
    assert pipeline_architecture(str(sdxl_folder)) == "sdxl" and pipeline_architecture(str(sd_folder)) == "sd"
    assert pipeline_architecture(str(sd_folder), "sdxl") == "sdxl"
    loaded = load_pipeline(str(sdxl_folder), device="cpu")
    assert isinstance(loaded, StableDiffusionXLPipeline)
    assert isinstance(load_pipeline(str(sd_folder), device="cpu"), StableDiffusionPipeline)
    with pytest.raises(ValueError, match="Unknown architecture 'xl'; choose one of sd, sdxl"):
        load_pipeline(str(sdxl_folder), device="cpu", architecture="xl")
    # Single files: SDXL's second text tower names the architecture; else a config folder or the caller does.
    sdxl_file, sd_file = tmp_path / "xl.safetensors", tmp_path / "v1.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}, str(sdxl_file))
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(1)}, str(sd_file))
    assert pipeline_architecture(str(sdxl_file)) == "sdxl" and pipeline_architecture(str(sd_file)) == "sd"
    assert pipeline_architecture(str(sd_file), single_file_config=str(sdxl_folder)) == "sdxl"
    # A folder's text side is both towers, as the pipeline's own.
    encoder, tokenizer = load_text_components(str(sdxl_folder))
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(encoder(ids)[0], text_components(loaded)[0](ids)[0])


def test_generate_train_evaluate_and_ground_on_tiny_sdxl(sdxl_pipe, tmp_path, capsys):
    sets = {}
    for kind, size in (("train", 4), ("val", 2), ("test-seen", 2)):
        sets[kind] = tmp_path / kind
        generate(config(sets[kind], set=kind, model="tiny-sdxl", num_samples=size), sdxl_pipe)
    before = hook_counts(sdxl_pipe.unet)
    run_folder = tmp_path / "run"
    (tmp_path / "train.json").write_text(json.dumps({"model": TINY_MODEL, "lr": 1e-3}))
    arguments = ["--train", str(sets["train"]), "--val", str(sets["val"]), "--out", str(run_folder)]
    options = ["--epochs", "1", "--progress", "false", "--config", str(tmp_path / "train.json")]
    assert main(["train", *arguments, *options]) == 0
    model, meta = load_grounding_model(run_folder / "best")
    assert meta.text_width == TEXT_WIDTH and meta.text_model == "tiny-sdxl"
    assert {name.split(".")[1]: shape for name, shape in meta.feature_shapes.items()} == TINY_SDXL_SHAPES
    report = evaluate_checkpoint(run_folder / "best", [sets["test-seen"]], tmp_path / "eval.json")
    assert 0.0 <= report.results["test-seen"]["miou"] <= 100.0
    prompt = "a photograph of a dog and a sofa"
    out = tmp_path / "grounded"
    assert main(["ground", prompt, "--checkpoint", str(run_folder / "best"), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"image.png", "mask_dog.png", "mask_sofa.png", "overlay.png"}
    image = np.zeros((40, 40, 3), np.uint8)
    result = ground_image(sdxl_pipe, model, meta, image, ["dog", "sofa"])
    assert result.probabilities["sofa"].shape == (40, 40)
    assert hook_counts(sdxl_pipe.unet) == before
    capsys.readouterr()


def test_full_size_sdxl_layout_from_config_without_weights():
    shapes = feature_shapes(sdxl_unet_config(), latent_size=128)
    assert shapes == SDXL_SHAPES
    assert bytes_per_image(shapes, torch.float16) == 2 * 25_559_040


def test_the_committed_sdxl_layout_is_the_computed_one():
    document = json.loads((Path(__file__).parents[1] / "docs/results/feature_layouts.json").read_text())
    sdxl = next(row for row in document["architectures"] if row["name"] == "SDXL")
    assert {row["block"]: tuple(row["shape"]) for row in sdxl["blocks"]} == SDXL_SHAPES

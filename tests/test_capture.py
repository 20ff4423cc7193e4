"""Feature capture on tiny SD 1.x / 2.x pipelines: shapes, steps, layouts, batches, dtypes, hook hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from groundiff.capture import (
    CaptureConfig,
    GenerationSettings,
    Layout,
    capture_features,
    default_block_names,
    generate_with_features,
)
from groundiff.capture.attention import capture_cross_attention, class_heat_maps
from groundiff.capture.hooks import hook_counts
from groundiff.capture.replay import stored_maps
from groundiff.capture.sizes import feature_shapes
from groundiff.sd import tiny as testing

PROMPTS = ["a photograph of a dog and a sofa", "a photograph of a pottedplant and a tvmonitor"]
TWO_STEPS = GenerationSettings(num_inference_steps=2)
# Tiny U-Net at 32² images (16² latents), channels (8, 16, 32, 32): per-image (C, H, W) of each block.
TINY_SHAPES = {
    "down0": (8, 8, 8),
    "down1": (16, 4, 4),
    "down2": (32, 2, 2),
    "down3": (32, 2, 2),
    "mid": (32, 2, 2),
    "up0": (32, 4, 4),
    "up1": (32, 8, 8),
    "up2": (16, 16, 16),
    "up3": (8, 16, 16),
}


def run(pipe, capture: CaptureConfig | None = None, settings: GenerationSettings = TWO_STEPS, prompts=PROMPTS):
    return generate_with_features(pipe, prompts, list(range(len(prompts))), settings=settings, capture=capture)


def test_default_capture_is_every_block_at_last_step(tiny_pipe):
    output = run(tiny_pipe)
    assert output.features.steps == (1,)
    maps = output.features.maps[1]
    assert list(maps) == list(default_block_names(tiny_pipe.unet)) == list(TINY_SHAPES)
    assert {name: tuple(t.shape) for name, t in maps.items()} == {n: (2, *s) for n, s in TINY_SHAPES.items()}
    assert output.images.shape == (2, 32, 32, 3) and output.images.dtype == np.uint8


def test_maps_group_by_resolution_coarsest_first(sd1_pipe):
    levels = run(sd1_pipe).features.by_resolution()
    assert list(levels) == [2, 4, 8, 16]
    assert [sum(t.shape[1] for t in maps) for maps in levels.values()] == [96, 48, 40, 24]


def test_meta_device_shapes_match_a_real_run(sd1_pipe):
    config = dict(sd1_pipe.unet.config)
    assert feature_shapes(config, latent_size=16) == TINY_SHAPES


def test_steps_blocks_and_timesteps_are_selectable(sd1_pipe):
    capture = CaptureConfig(blocks=("mid", "up3", "down_blocks.1.attentions.0"), steps=(0, -1))
    features = run(sd1_pipe, capture, GenerationSettings(num_inference_steps=3)).features
    assert features.steps == (0, 2)
    assert list(features.maps[0]) == ["down_blocks.1.attentions.0", "mid", "up3"]  # forward order
    scheduled = [int(t) for t in sd1_pipe.scheduler.timesteps]
    assert features.timesteps == {0: scheduled[0], 2: scheduled[2]}
    assert not torch.equal(features.maps[0]["up3"], features.maps[2]["up3"])


def test_uncond_cond_layout_stacks_both_halves_per_image(sd1_pipe):
    cond = run(sd1_pipe, CaptureConfig(layout=Layout.COND)).features.maps[1]
    both = run(sd1_pipe, CaptureConfig(layout="uncond+cond")).features.maps[1]
    for name, tensor in both.items():
        channels = cond[name].shape[1]
        assert tensor.shape[1] == 2 * channels
        torch.testing.assert_close(tensor[:, channels:], cond[name], rtol=0, atol=0)
        assert not torch.equal(tensor[:, :channels], tensor[:, channels:])


def test_each_image_of_a_batch_gets_its_own_features(sd1_pipe):
    batch = run(sd1_pipe, CaptureConfig(layout="uncond+cond"))
    alone = generate_with_features(
        sd1_pipe, PROMPTS[1:], [1], settings=TWO_STEPS, capture=CaptureConfig(layout="uncond+cond")
    )
    for name, tensor in batch.features.maps[1].items():
        torch.testing.assert_close(tensor[1], alone.features.maps[1][name][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batch.images[1], alone.images[0], atol=1)


def test_without_guidance_cond_layout_works_and_uncond_cond_is_refused(sd1_pipe):
    no_guidance = GenerationSettings(num_inference_steps=2, guidance_scale=1.0)
    assert run(sd1_pipe, settings=no_guidance).features.maps[1]["mid"].shape == (2, 32, 2, 2)
    with pytest.raises(ValueError, match="uncond\\+cond.*guidance"):
        run(sd1_pipe, CaptureConfig(layout="uncond+cond"), settings=no_guidance)


def test_images_are_bitwise_identical_with_and_without_capture(tiny_pipe):
    def plain_call():
        generators = [torch.Generator().manual_seed(7)]
        return tiny_pipe(PROMPTS[:1], num_inference_steps=2, generator=generators, output_type="np").images

    plain = plain_call()
    with capture_features(tiny_pipe, CaptureConfig(steps=(0, 1))):
        captured = plain_call()
    assert np.array_equal(plain, captured)
    generated = generate_with_features(tiny_pipe, PROMPTS[:1], [7], settings=TWO_STEPS)
    assert np.array_equal((np.clip(plain, 0, 1) * 255).round().astype(np.uint8), generated.images)


def test_no_hook_is_left_behind_after_success_or_error(sd1_pipe):
    before = hook_counts(sd1_pipe.unet)
    run(sd1_pipe, CaptureConfig(steps=(0, 1)))
    assert hook_counts(sd1_pipe.unet) == before
    with pytest.raises(RuntimeError, match="boom"), capture_features(sd1_pipe):
        assert hook_counts(sd1_pipe.unet) != before
        raise RuntimeError("boom")
    assert hook_counts(sd1_pipe.unet) == before
    with pytest.raises(ValueError, match="does not exist in a run of 2"):
        run(sd1_pipe, CaptureConfig(steps=(5,)))
    assert hook_counts(sd1_pipe.unet) == before


def test_two_pipeline_calls_in_one_capture_are_refused(sd1_pipe):
    with pytest.raises(RuntimeError, match="one pipeline call"), capture_features(sd1_pipe):
        for _ in range(2):
            sd1_pipe(PROMPTS[:1], num_inference_steps=2, output_type="np")


def test_unknown_block_names_the_valid_ones(sd1_pipe):
    with pytest.raises(ValueError, match="'up7' is not part of this U-Net.*up3.*Valid block names: down0"):
        run(sd1_pipe, CaptureConfig(blocks=("up7",)))


def test_bad_config_values_are_explained():
    with pytest.raises(ValueError, match="steps is empty"):
        CaptureConfig(steps=())
    with pytest.raises(ValueError, match="blocks is empty"):
        CaptureConfig(blocks=())
    with pytest.raises(ValueError, match="uncond_cond"):
        CaptureConfig(layout="uncond_cond")
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate_with_features(None, PROMPTS, [0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_stay_on_device_in_pipeline_dtype(dtype):
    pipe = testing.tiny_pipeline("sd1").to(dtype=dtype)
    features = run(pipe).features
    assert {t.dtype for t in features.maps[1].values()} == {dtype}
    assert {t.device.type for t in features.maps[1].values()} == {pipe.device.type}
    stored = features.to("cpu", torch.float16)
    assert stored.nbytes_per_image() == sum(2 * int(np.prod(s)) for s in TINY_SHAPES.values())
    assert all(torch.isfinite(t).all() for t in stored.maps[1].values())


def test_flat_names_address_each_step_and_block(sd1_pipe):
    features = run(sd1_pipe, CaptureConfig(blocks=("mid",), steps=(0, 1))).features
    flat = features.flat(1)
    assert set(flat) == {"step0.mid", "step1.mid"}
    assert torch.equal(flat["step1.mid"], features.maps[1]["mid"][1])


@pytest.mark.parametrize("layout", ["cond", "uncond+cond"])
def test_maps_replayed_from_stored_unet_inputs_match_the_captured_ones(sd1_pipe, layout):
    capture = CaptureConfig(layout=layout, steps=(0, -1))
    features = run(sd1_pipe, capture, GenerationSettings(num_inference_steps=3)).features
    flat = features.flat(1, maps=False, inputs=True)
    assert flat["step2.input.sample"].shape == (4, 16, 16) and flat["step2.input.text"].shape == (77, 32)
    replayed = stored_maps(flat, features.timesteps, sd1_pipe.unet, capture)
    captured = features.flat(1)
    assert replayed.keys() == captured.keys()
    for name, tensor in replayed.items():
        # Same inputs, same weights; only the batch composition differs (floating-point effects).
        torch.testing.assert_close(tensor, captured[name], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="pass the U-Net"):
        stored_maps(flat, features.timesteps)


def test_cross_attention_recording_leaves_images_and_processors_unchanged(tiny_pipe, tokenizer):
    processors = dict(tiny_pipe.unet.attn_processors)
    plain = generate_with_features(tiny_pipe, PROMPTS, [0, 1], settings=TWO_STEPS)
    recorded = generate_with_features(tiny_pipe, PROMPTS, [0, 1], settings=TWO_STEPS, attention=True)
    assert np.array_equal(plain.images, recorded.images)
    # DAAM: (B, T, latent, latent), the mean over (layer, head) of clamped bicubic upsamplings, so ≥ 0.
    assert recorded.attention.shape == (2, 77, 16, 16) and plain.attention is None
    assert recorded.attention.dtype == torch.float32 and recorded.attention.min() >= 0
    assert tiny_pipe.unet.attn_processors == processors
    heat = class_heat_maps(recorded.attention[1], tokenizer, PROMPTS[1], ["pottedplant", "tvmonitor"])
    assert heat.shape == (2, 16, 16)  # min-max normalised per class
    assert torch.equal(heat.flatten(1).amin(1), torch.zeros(2))
    assert torch.allclose(heat.flatten(1).amax(1), torch.ones(2))
    with pytest.raises(RuntimeError, match="boom"), capture_cross_attention(tiny_pipe):
        raise RuntimeError("boom")
    assert tiny_pipe.unet.attn_processors == processors

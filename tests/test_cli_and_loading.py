"""The `groundiff` command and pipeline loading by name and local folder."""

from __future__ import annotations

import argparse
import json

import pytest
from safetensors.torch import load_file

from groundiff import __version__
from groundiff.cli import build_parser, main
from groundiff.sd.dtypes import parse_dtype
from groundiff.sd.pipelines import load_pipeline


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"groundiff {__version__}"
    assert main([]) == 0
    assert "capture" in capsys.readouterr().out
    # Every command's help renders: argparse %-formats help texts, so a bare "%" in one breaks it.
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name
        assert "usage: groundiff " + name in capsys.readouterr().out


def test_env_prints_versions_and_device(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "diffusers", "transformers", "device", "dtype"):
        assert key in out


def test_capture_command_prints_and_writes_features(capsys, tmp_path):
    assert main(["capture", "a photograph of a dog and a sofa", "--steps", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "captured 9 maps" in out and "level  16x16" in out
    tensors = load_file(tmp_path / "features0.safetensors")
    assert tensors["step1.up3"].shape == (8, 16, 16)
    assert (tmp_path / "image0.png").exists()


def test_capture_command_reports_bad_input(capsys):
    assert main(["capture", "--steps", "2", "--blocks", "up9"]) == 2
    assert "Feature block 'up9' is not part of this U-Net" in capsys.readouterr().err
    assert main(["capture", "--model", "./no/such/model"]) == 2
    assert "Model path './no/such/model' does not exist" in capsys.readouterr().err


def test_pipeline_saved_to_a_folder_loads_back_offline(sd1_pipe, tmp_path):
    sd1_pipe.save_pretrained(tmp_path / "tiny")
    pipe = load_pipeline(str(tmp_path / "tiny"), dtype="float32", device="cpu")
    assert list(pipe.unet.config.block_out_channels) == list(sd1_pipe.unet.config.block_out_channels)
    assert pipe.tokenizer("pottedplant").input_ids == [49406, 3547, 4841, 3912, 49407]
    assert pipe.safety_checker is None


def test_loading_errors_explain_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "empty"), device="cpu")
    (tmp_path / "weights.bin").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="no .safetensors or .ckpt"):
        load_pipeline(str(tmp_path / "weights.bin"), device="cpu")
    with pytest.raises(ValueError, match="Unknown dtype 'fp8'; choose one of float32"):
        parse_dtype("fp8")

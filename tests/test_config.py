"""`groundiff.config`: command-line arguments from the `option` metadata of config dataclasses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from groundiff.config import REQUIRED, add_dataclass_flags, build_config, option


@dataclass
class Toy:
    prompt: str = option(REQUIRED, "what to draw", positional=True)
    data: tuple[str, ...] = option(REQUIRED, "set folders", many=True)
    val: tuple[int, ...] | None = option(None, "validation seeds", many=True)
    steps: int = option(50, "denoising steps")
    dtype: Literal["float32", "float16"] = option("float32", "pipeline dtype")
    baseline: bool = option(False, "also score the baseline", switch=True)


def parse(*argv: str) -> Toy:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    add_dataclass_flags(parser, Toy)
    args = parser.parse_args(argv)
    return build_config(Toy, args.config, args)


def test_positional_required_and_space_separated_arguments():
    toy = parse("a dog", "--data", "a", "b,c", "--val", "1", "2")
    assert toy == Toy(prompt="a dog", data=("a", "b", "c"), val=(1, 2))
    assert (toy.steps, toy.dtype, toy.baseline) == (50, "float32", False)
    assert parse("x", "--data", "a", "--baseline").baseline is True


@pytest.mark.parametrize(
    "argv",
    [
        ("a dog",),  # --data missing
        ("--data", "a"),  # the positional prompt missing
        ("a dog", "--data"),  # a list flag with no value
        ("a dog", "--data", "a", "--dtype", "float64"),  # not one of the choices
        ("a dog", "--data", "a", "--val", "1", "x"),  # not an integer
    ],
)
def test_missing_or_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_config_file_gives_the_same_values_and_flags_win(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("val: [1, 2]\nsteps: 3\nbaseline: true\ndtype: float16\n")
    toy = parse("a dog", "--data", "a", "--config", str(path))
    assert toy == parse("a dog", "--data", "a", "--val", "1", "2", "--steps", "3", "--baseline", "--dtype", "float16")
    assert parse("a dog", "--data", "a", "--config", str(path), "--val", "7", "--steps", "4").val == (7,)
    path.write_text("val: 1,2\n")  # a list may be comma-separated text, as on the command line
    assert parse("a dog", "--data", "a", "--config", str(path)).val == (1, 2)


def test_bad_file_values_and_missing_fields_are_one_line_value_errors(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("dtype: float64\n")
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, got 'float64'"):
        parse("a dog", "--data", "a", "--config", str(path))
    with pytest.raises(ValueError, match="Toy needs prompt, --data"):
        build_config(Toy, None, argparse.Namespace())


def test_every_command_keeps_its_space_separated_lists():
    from groundiff.cli import build_parser
    from groundiff.evaluation.config import EvaluateConfig
    from groundiff.ground import GroundConfig

    parser = build_parser()
    args = parser.parse_args(["evaluate", "--checkpoint", "c", "--data", "a", "b", "--val", "v", "--out", "o"])
    evaluate = build_config(EvaluateConfig, args.config, args)
    assert (evaluate.data, evaluate.val, evaluate.attention_baseline) == (("a", "b"), ("v",), False)
    args = parser.parse_args(["ground", "a dog and a sofa", "--checkpoint", "c", "--objects", "dog", "sofa"])
    ground = build_config(GroundConfig, args.config, args)
    assert (ground.prompt, ground.objects, ground.out) == ("a dog and a sofa", ("dog", "sofa"), "grounded")

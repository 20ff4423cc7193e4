"""Configs as views: dataclass fields from YAML/TOML/JSON files and from command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def read_config_file(path: Path) -> dict[str, Any]:
    """A mapping from a `.yaml`/`.yml`, `.toml` or `.json` file."""
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text) or {}
    elif path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"Config file {str(path)!r} must end in .yaml, .yml, .toml or .json.")
    if not isinstance(data, dict):
        raise ValueError(f"Config file {str(path)!r} must hold a mapping of field names to values.")
    return data


def option(default: Any, help_text: str) -> Any:
    """A dataclass field with the help text its command-line flag shows."""
    return dataclasses.field(default=default, metadata={"help": help_text})


def _flag_type(annotation: Any) -> tuple[Any, bool]:
    """(parser of one CLI string, is_sequence) for a field annotation such as `int | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _flag_type(args[0])
    if origin is tuple:
        return args[0], True
    return annotation, False


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One `--field-name` flag per dataclass field (sequences comma-separated); defaults stay unset."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        parse, is_sequence = _flag_type(hints[field.name])
        flag, help_text = f"--{field.name.replace('_', '-')}", field.metadata.get("help", "")
        if parse is bool:
            parser.add_argument(flag, type=_parse_bool, default=None, metavar="BOOL", help=help_text)
            continue
        kind = (lambda text, p=parse: tuple(p(x) for x in text.split(","))) if is_sequence else parse
        parser.add_argument(flag, type=kind, default=None, help=help_text)


def _parse_bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def build_config(cls: type[T], file: str | None, flags: argparse.Namespace) -> T:
    """A `cls` from the config file (if any) with every flag given on the command line on top."""
    values: dict[str, Any] = read_config_file(Path(file)) if file else {}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"Config file {file!r} has unknown fields {', '.join(unknown)}; known: {', '.join(sorted(names))}."
        )
    values.update({name: getattr(flags, name) for name in names if getattr(flags, name, None) is not None})
    return cls(**values)

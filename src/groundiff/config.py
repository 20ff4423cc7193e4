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
    """A mapping from a `.yaml`/`.yml`, `.toml` or `.json` file.

    Raises:
        ValueError: the file is not valid YAML/TOML/JSON (the message gives the line) or holds no mapping.
    """
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"Config file {str(path)!r} must end in .yaml, .yml, .toml or .json.")
    except yaml.MarkedYAMLError as error:
        where = f" at line {error.problem_mark.line + 1}" if error.problem_mark else ""
        message = f"Config file {str(path)!r} is not valid YAML{where}: {error.problem}; fix it there."
        raise ValueError(message) from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        kind = path.suffix.lstrip(".").upper()
        raise ValueError(f"Config file {str(path)!r} is not valid {kind}: {error}; fix it there.") from None
    if not isinstance(data, dict):
        raise ValueError(f"Config file {str(path)!r} must hold a mapping of field names to values.")
    return data


# The default of an `option` that has none: the flag (or positional argument) must be given.
REQUIRED: Any = dataclasses.MISSING


def option(default: Any, help_text: str, *, positional: bool = False, many: bool = False, switch: bool = False) -> Any:
    """A dataclass field that `add_dataclass_flags` turns into a command-line argument showing `help_text`.

    `default=REQUIRED` gives a field without default, whose argument must be given (a keyword-only
    field, so it may follow fields with defaults). `positional`: a positional argument instead of a
    `--flag` (optional, `nargs="?"`, when it has a default). `many`: a tuple field that takes several
    space-separated values (`--data a b c`; comma-separated values are split too). `switch`: a bool
    flag that takes no value (`--attention-baseline`) instead of `--flag true|false`.
    """
    metadata = {"help": help_text, "positional": positional, "many": many, "switch": switch}
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata, kw_only=True)
    return dataclasses.field(default=default, metadata=metadata)


def _flag_type(annotation: Any) -> tuple[Any, bool, tuple[Any, ...] | None]:
    """(parser of one CLI string, is_sequence, choices) for a field annotation such as `int | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _flag_type(args[0])
    if origin is tuple:
        return _flag_type(args[0])[0], True, None
    if origin is typing.Literal:
        return type(args[0]), False, tuple(args)
    return annotation, False, None


def _comma_separated(parse: Any) -> Any:
    """A parser of "a,b,c" into a tuple of `parse`d pieces, named so argparse's errors say what it wanted."""

    def parse_pieces(text: str) -> tuple[Any, ...]:
        return tuple(parse(piece) for piece in text.split(","))

    parse_pieces.__name__ = f"comma-separated {getattr(parse, '__name__', 'value')}"
    return parse_pieces


class _Flatten(argparse.Action):
    """Stores the pieces of several space-separated, each possibly comma-separated, values as one tuple."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, tuple(piece for value in values for piece in value))


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per `option` field of a dataclass; values not given stay None, so file values apply.

    A field becomes `--field-name` (or the positional `field_name`), typed by its annotation: `bool`
    takes true/false (or nothing, as a `switch`), a `Literal` offers its values as choices, a tuple
    takes one comma-separated value (or several, with `many`). Fields made without `option` (such as
    `TrainConfig.model`, a mapping) come from the config file only.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata:
            continue
        meta, required = field.metadata, field.default is dataclasses.MISSING
        parse, is_sequence, choices = _flag_type(hints[field.name])
        if meta["many"] and not is_sequence:
            raise TypeError(f"{cls.__name__}.{field.name} takes many values, so it must be a tuple field.")
        kind = _comma_separated(parse) if is_sequence else parse
        options: dict[str, Any] = {"help": meta["help"], "default": None}
        if meta["switch"]:
            options["action"] = "store_true"
        elif parse is bool:
            options.update(type=_parse_bool, metavar="BOOL")
        else:
            options.update(type=kind, choices=choices)
        if meta["many"]:
            options.update(nargs="+" if required or not meta["positional"] else "*", action=_Flatten)
        elif meta["positional"] and not required:
            options["nargs"] = "?"
        if not meta["positional"]:
            options["required"] = required
        parser.add_argument(_argument_name(field), **options)


def _argument_name(field: dataclasses.Field[Any]) -> str:
    """`field_name` for a positional argument, else `--field-name`."""
    return field.name if field.metadata.get("positional") else f"--{field.name.replace('_', '-')}"


def typed_values(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` checked against the types of `cls`'s fields, read from `source` (named in errors).

    Lists become tuples, a comma-separated string becomes a tuple as on the command line, and an int
    is taken for a float. Anything else of the wrong type is refused, since a later `range(2.7)` or a
    tuple of the letters of "cat,dog" would fail far from the cause or not at all.

    Raises:
        ValueError: naming the field, the value, the type it needs and (for a quoted number) the fix.
    """
    hints = typing.get_type_hints(cls)
    return {
        name: _typed(hints[name], value, f"{source}: {name}") if name in hints else value
        for name, value in values.items()
    }


def check_types(config: Any) -> None:
    """Check every field of a config dataclass against its type, normalised as by `typed_values`, in place."""
    values = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    for name, value in typed_values(type(config), values, type(config).__name__).items():
        setattr(config, name, value)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text", dict: "a mapping"}


def _typed(annotation: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        return _typed(options[0], value, where) if len(options) == 1 else value
    if origin is tuple:
        if isinstance(value, str):  # "cat,dog" as on the command line
            value = [_parse_piece(args[0], piece.strip(), where) for piece in value.split(",")]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}.")
        return tuple(_typed(args[0], item, where) for item in value)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}.")
        return value
    expected = origin or annotation
    if expected not in _TYPE_NAMES:
        return value  # a type this check does not know (Path, ...): the class validates it
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    quoted = isinstance(value, str) and expected in (int, float, bool)
    hint = "; write it without quotes" if quoted and _parses(expected, value) else ""
    raise ValueError(f"{where} must be {_TYPE_NAMES[expected]}, got {value!r}{hint}.")


def _parse_piece(parse: Any, piece: str, where: str) -> Any:
    try:
        return parse(piece)
    except ValueError:
        raise ValueError(f"{where} is a comma-separated list, and {piece!r} is not {_TYPE_NAMES[parse]}.") from None


def _parses(expected: type, text: str) -> bool:
    if expected is bool:
        return text.lower() in ("true", "false")
    try:
        expected(text)
    except ValueError:
        return False
    return True


def _parse_bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def build_config(cls: type[T], file: str | None, flags: argparse.Namespace) -> T:
    """A `cls` from the config file (if any) with every flag given on the command line on top.

    Raises:
        ValueError: the file has a field `cls` does not know or a value of the wrong type, or a
            `REQUIRED` field is given neither by a flag nor by the file.
    """
    values: dict[str, Any] = read_config_file(Path(file)) if file else {}
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in fields}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"Config file {file!r} has unknown fields {', '.join(unknown)}; known: {', '.join(sorted(names))}."
        )
    values = typed_values(cls, values, f"Config file {file!r}")
    values.update({name: getattr(flags, name) for name in names if getattr(flags, name, None) is not None})
    needed = (f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    missing = [_argument_name(f) for f in needed if f.name not in values]
    if missing:
        raise ValueError(f"{cls.__name__} needs {', '.join(missing)}; give it on the command line or in the file.")
    return cls(**values)

"""Render the documentation from its templates and the committed result files; `--check` finds stale docs.

Every measured figure in README.md, docs/RESULTS.md, docs/BENCHMARKS.md and
docs/miniworld/RESULTS_PART1.md is a placeholder in `docs/templates/<NAME>.md` that reads a JSON
file under `docs/`. Edit the template or the JSON, then run `python scripts/render_docs.py`;
`python scripts/render_docs.py --check` (run by tests/test_docs.py) exits 1 when a doc differs
from its rendered template, listing each with a diff, and writes nothing; both exit 2 when a
template cannot be rendered (the message names the template, line, file and key).

Template syntax, the whole of it:

- `{{ SOURCE : PATH }}` or `{{ SOURCE : PATH : SPEC }}` is replaced by one value.
  SOURCE is a JSON file relative to `docs/` (`results/tables_3seeds.json`) or a loop name (below).
  PATH is a dotted key path: `tables.table2.rows.0.mean.test-seen`; keys may hold `-` and spaces,
  a segment of digits indexes a list. `A - B` or `A / B` (spaces around the operator) is the
  difference or ratio of two paths of the same source. SPEC is a Python format spec (`.1f`, `,`,
  `.0%`); without it the value is written with `str`. A JSON `null` is written as `–`.
- A line `{{ use NAME = FILE }}` names a JSON file for the lines below it: `{{ NAME : PATH }}`.
- A line `{{ for NAME in SOURCE : PATH }}` repeats the lines up to its line `{{ end }}` once per
  item of the list at PATH; inside, NAME is a SOURCE whose paths start at the item.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# Template name (under docs/templates/) -> rendered file (relative to the repository root).
TARGETS = {
    "README.md": "README.md",
    "RESULTS.md": "docs/RESULTS.md",
    "BENCHMARKS.md": "docs/BENCHMARKS.md",
    "miniworld/RESULTS_PART1.md": "docs/miniworld/RESULTS_PART1.md",
}

HEADER = (
    "<!-- Rendered by scripts/render_docs.py from docs/templates/{name} and docs/results/*.json: "
    "edit those, not this file. -->\n"
)
PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
FOR_LINE = re.compile(r"^\s*\{\{\s*for\s+(\w+)\s+in\s+(.+?)\s*\}\}\s*$")
USE_LINE = re.compile(r"^\s*\{\{\s*use\s+(\w+)\s*=\s*(.+?)\s*\}\}\s*$")
END_LINE = re.compile(r"^\s*\{\{\s*end\s*\}\}\s*$")
OPERATOR = re.compile(r"\s+([-/])\s+")
MISSING = "–"
DIFF_LINES = 40


class RenderError(ValueError):
    """A template that cannot be rendered; the message names the template, line, file and key."""


# A name bound by `use` or `for`: a label for error messages (the file, or the file, path and index) and its value.
Scope = Mapping[str, tuple[str, Any]]


class _Template:
    """One template being rendered: its name for error messages, and the JSON files it has read so far."""

    def __init__(self, name: str, docs: Path) -> None:
        self.name = name
        self.docs = docs
        self.files: dict[str, Any] = {}

    def error(self, line: int, message: str) -> RenderError:
        return RenderError(f"{self.name}:{line}: {message}")

    def load(self, file: str, line: int) -> Any:
        """The parsed JSON file `docs/<file>`, read once."""
        if file not in self.files:
            path = self.docs / file
            if not path.is_file():
                raise self.error(line, f"no file docs/{file}; a SOURCE is a JSON file relative to docs/ or a name.")
            try:
                self.files[file] = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise self.error(line, f"docs/{file} is not valid JSON: {error}") from error
        return self.files[file]

    def source(self, source: str, scope: Scope, line: int) -> tuple[str, Any]:
        return scope[source] if source in scope else (source, self.load(source, line))

    def lookup(self, label: str, value: Any, path: str, line: int) -> Any:
        """The value at dotted `path` inside `value`; a segment of digits indexes a list."""
        walked: list[str] = []
        for key in (segment.strip() for segment in path.split(".")):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                if isinstance(value, dict):
                    there = f"keys {', '.join(map(repr, value))}"
                else:
                    there = f"a list of {len(value)}" if isinstance(value, list) else f"a {type(value).__name__}"
                where = ".".join(walked) or "the top level"
                raise self.error(line, f"{label}: no key {key!r} at {where} of path {path!r}; there: {there}.")
            walked.append(key)
        return value

    def value(self, source: str, path: str, scope: Scope, line: int) -> Any:
        """The JSON value of `SOURCE : PATH`, where PATH may be `A - B` or `A / B`."""
        label, data = self.source(source, scope, line)
        operands = OPERATOR.split(path)
        if len(operands) == 1:
            return self.lookup(label, data, path, line)
        if len(operands) != 3:
            raise self.error(line, f"{path!r}: only one `-` or `/` between two paths is allowed.")
        left, operator, right = operands
        a, b = self.lookup(label, data, left, line), self.lookup(label, data, right, line)
        if not all(isinstance(v, int | float) for v in (a, b)):
            raise self.error(line, f"{label}: {path!r}: `{operator}` needs two numbers, got {a!r} and {b!r}.")
        return a - b if operator == "-" else a / b

    def substitute(self, text: str, scope: Scope, line: int) -> str:
        """`text` with each `{{ SOURCE : PATH [: SPEC] }}` replaced by its formatted value."""

        def replace(match: re.Match[str]) -> str:
            source, path, spec = _fields(match.group(1))
            if not source or not path:
                raise self.error(line, f"{match.group(0)} needs the form {{{{ SOURCE : PATH [: SPEC] }}}}.")
            value = self.value(source, path, scope, line)
            if value is None:
                return MISSING
            try:
                return format(value, spec) if spec else str(value)
            except (TypeError, ValueError) as error:
                raise self.error(line, f"{match.group(0)}: cannot format {value!r} with {spec!r}: {error}") from error

        return PLACEHOLDER.sub(replace, text)

    def render(self, lines: list[tuple[int, str]], scope: Scope) -> list[str]:
        """Numbered template lines rendered: `use` lines bind names, `for` … `end` blocks repeat."""
        out: list[str] = []
        index = 0
        while index < len(lines):
            number, text = lines[index]
            use, loop = USE_LINE.match(text), FOR_LINE.match(text)
            if END_LINE.match(text):
                raise self.error(number, "`{{ end }}` without its `{{ for … }}` line.")
            if use:
                name, file = use.groups()
                scope = {**scope, name: (file, self.load(file, number))}
                index += 1
                continue
            if not loop:
                out.append(self.substitute(text, scope, number))
                index += 1
                continue
            depth, end = 1, index + 1
            while end < len(lines) and depth:
                depth += bool(FOR_LINE.match(lines[end][1])) - bool(END_LINE.match(lines[end][1]))
                end += 1
            if depth:
                raise self.error(number, "`{{ for … }}` without its `{{ end }}` line.")
            name, (source, path, _) = loop.group(1), _fields(loop.group(2))
            items = self.value(source, path, scope, number)
            if not isinstance(items, list):
                raise self.error(number, f"`for` needs a list at {source} : {path}, got a {type(items).__name__}.")
            label = self.source(source, scope, number)[0]
            for i, item in enumerate(items):
                out.extend(self.render(lines[index + 1 : end - 1], {**scope, name: (f"{label} {path}.{i}", item)}))
            index = end
        return out


def _fields(text: str) -> tuple[str, str, str]:
    """`SOURCE : PATH : SPEC` split and stripped; SPEC (and PATH) empty when absent."""
    source, _, rest = text.partition(":")
    path, _, spec = rest.partition(":")
    return source.strip(), path.strip(), spec.strip()


def render_template(name: str, root: Path = REPO_ROOT) -> str:
    """The rendered text of `docs/templates/<name>`, JSON sources read from `<root>/docs/`.

    Raises:
        RenderError: a missing file or key, a bad format spec or an unbalanced `for`/`end`; the
            message starts with `<name>:<line>:`.
    """
    template = root / "docs" / "templates" / name
    if not template.is_file():
        raise RenderError(f"{name}: no template docs/templates/{name}; every doc in TARGETS needs one.")
    lines = list(enumerate(template.read_text(encoding="utf-8").splitlines(), start=1))
    return HEADER.format(name=name) + "\n".join(_Template(name, root / "docs").render(lines, {})) + "\n"


def stale_docs(root: Path = REPO_ROOT) -> dict[str, str]:
    """Each rendered doc (repository-relative path) whose file differs from its template, with a diff."""
    stale = {}
    for name, target in TARGETS.items():
        rendered = render_template(name, root)
        path = root / target
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current != rendered:
            committed, fresh = f"{target} (committed)", f"{target} (rendered)"
            diff = difflib.unified_diff(current.splitlines(), rendered.splitlines(), committed, fresh, lineterm="")
            stale[target] = "\n".join(list(diff)[:DIFF_LINES])
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="render in memory; exit 1 when a doc differs")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root holding README.md and docs/")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_docs(args.root)
            for target, diff in stale.items():
                print(f"{target} differs from its template; run `python scripts/render_docs.py`.\n{diff}\n")
            return 1 if stale else 0
        for name, target in TARGETS.items():
            path = args.root / target
            rendered = render_template(name, args.root)
            if not path.is_file() or path.read_text(encoding="utf-8") != rendered:
                path.write_text(rendered, encoding="utf-8")
                print(f"wrote {target}")
    except RenderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Draw groundiff's package graph from the code: which top-level package imports which, in the layers
declared for import-linter in pyproject.toml.

    python scripts/package_graph.py           # rewrite the graph in docs/ARCHITECTURE.md and docs/architecture.png
    python scripts/package_graph.py --check   # fail when the graph in docs/ARCHITECTURE.md is stale
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "groundiff"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PICTURE = ROOT / "docs" / "architecture.png"
BEGIN, END = "<!-- package graph: begin (scripts/package_graph.py) -->", "<!-- package graph: end -->"


def layers() -> list[list[str]]:
    """The import-linter layers, top first, each a list of top-level names (`groundiff.` stripped)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    return [
        [name.strip().removeprefix("groundiff.") for name in re.split(r"[|:]", layer)] for layer in config["layers"]
    ]


def top_level(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "groundiff" else None


def imports() -> set[tuple[str, str]]:
    """(importer, imported) pairs of top-level packages/modules, function-local imports included."""
    edges = set()
    for path in PACKAGE.rglob("*.py"):
        source = top_level(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                target = top_level(name)
                if (
                    source
                    and target
                    and target != source
                    and (PACKAGE / target).exists() | (PACKAGE / f"{target}.py").exists()
                ):
                    edges.add((source, target))
    return edges


def drawn(edges: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The edges worth drawing: the command line's (it calls into every layer) and imports of the bottom
    layer (configs, files, the world registry), which every package may use, are left out so that the
    method's flow stays readable."""
    bottom = set(layers()[-1])
    return sorted((a, b) for a, b in edges if b not in bottom and a != "cli")


def mermaid(edges: set[tuple[str, str]]) -> str:
    lines = ["```mermaid", "flowchart TD"]
    for number, layer in enumerate(layers()):
        lines.append(f'  subgraph L{number}[" "]')
        lines += [f"    {name}" for name in layer]
        lines.append("  end")
    lines += [f"  {a} --> {b}" for a, b in drawn(edges)]
    lines.append("```")
    return "\n".join(lines)


def draw(edges: set[tuple[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = layers()
    where = {}
    for y, layer in enumerate(rows):
        for x, name in enumerate(layer):
            where[name] = ((x + 1) / (len(layer) + 1), 1 - (y + 0.5) / len(rows))
    figure, axes = plt.subplots(figsize=(11, 9))
    for a, b in drawn(edges):
        (x0, y0), (x1, y1) = where[a], where[b]
        axes.annotate(
            "",
            xy=(x1, y1 + 0.025),
            xytext=(x0, y0 - 0.025),
            arrowprops={"arrowstyle": "->", "color": "#8899aa", "lw": 0.8, "shrinkA": 4, "shrinkB": 4},
        )
    for name, (x, y) in where.items():
        axes.text(
            x,
            y,
            name,
            ha="center",
            va="center",
            fontsize=10,
            bbox={"boxstyle": "round,pad=0.4", "fc": "#eef3fb", "ec": "#3b5b92"},
        )
    axes.set_axis_off()
    axes.set_title("groundiff: packages by layer (top imports bottom; arrows are imports)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/ARCHITECTURE.md's graph is stale")
    args = parser.parse_args(argv)
    edges = imports()
    text = DOC.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    updated = text[:start] + "\n" + mermaid(edges) + "\n" + text[stop:]
    if args.check:
        if updated != text:
            print(f"{DOC} has a stale package graph; run python scripts/package_graph.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(updated)
    draw(edges, PICTURE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

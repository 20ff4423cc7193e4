"""The docs' figures come from docs/results/*.json: the committed docs equal their rendered templates.

`scripts/render_docs.py --check` renders every template in memory; these tests run it on the real
tree, on a copy whose JSON was changed (it must fail), and lint the templates so that a measured
figure cannot be typed by hand.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = REPO_ROOT / "docs" / "templates"

# Decimal numbers a template may spell out: versions and model names, and one default setting.
ALLOWED_DECIMALS = (
    "Python ≥ 3.11",
    "diffusers>=0.42",
    "SD 1.5",
    "SD 2.1",
    "dropout 0.1",
    "CFG 7.5",
    "127.0.0.1",
    "--negative-fraction 0.5",  # settings, not measurements
    "--hard-negatives 0.5",
    "--negative-fraction 1.0",
)
DECIMAL = re.compile(r"\d+\.\d+")
PLACEHOLDER = re.compile(r"\{\{.*?\}\}")
FENCED_CODE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _load_script(name: str):
    """A module of scripts/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_docs = _load_script("render_docs")


def hand_typed_decimals(template_text: str) -> list[str]:
    """Lines of a template with a decimal number outside placeholders, fenced code and the allow-list."""
    text = PLACEHOLDER.sub("", FENCED_CODE.sub("", template_text))
    for allowed in ALLOWED_DECIMALS:
        text = text.replace(allowed, "")
    return [line.strip() for line in text.splitlines() if DECIMAL.search(line)]


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """A copy of the repository's docs/ (templates, JSON files, rendered docs) and README.md, to change freely."""
    shutil.copytree(REPO_ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(REPO_ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def _write_template(root: Path, name: str, text: str) -> None:
    (root / "docs" / "templates" / name).write_text(text, encoding="utf-8")


def test_committed_docs_equal_their_rendered_templates(capsys):
    assert render_docs.main(["--check"]) == 0, capsys.readouterr().out


def test_check_fails_when_a_json_number_changes(docs_copy, capsys):
    path = docs_copy / "docs" / "results" / "tables_3seeds.json"
    report = json.loads(path.read_text())
    report["tables"]["table2"]["rows"][0]["mean"]["test-seen"] = 12.34
    path.write_text(json.dumps(report))

    assert render_docs.main(["--check", "--root", str(docs_copy)]) == 1
    out = capsys.readouterr().out
    assert "docs/RESULTS.md differs" in out
    assert "12.3 ± " in out  # the diff shows the new figure
    assert render_docs.main(["--root", str(docs_copy)]) == 0  # re-rendering makes them agree again
    assert render_docs.main(["--check", "--root", str(docs_copy)]) == 0


def test_check_fails_when_a_doc_is_edited_by_hand(docs_copy, capsys):
    readme = docs_copy / "README.md"
    readme.write_text(readme.read_text() + "A figure typed by hand: 99.9.\n")

    assert render_docs.main(["--check", "--root", str(docs_copy)]) == 1
    out = capsys.readouterr().out
    assert "README.md differs" in out and "-A figure typed by hand: 99.9." in out


@pytest.mark.parametrize("template", sorted(p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*.md")))
def test_templates_hold_no_hand_typed_decimal(template):
    hand_typed = hand_typed_decimals((TEMPLATES / template).read_text(encoding="utf-8"))
    assert not hand_typed, f"{template}: write measured figures as {{{{ FILE : KEY : SPEC }}}}: {hand_typed}"


def test_the_lint_finds_a_hand_typed_figure_but_not_placeholders_code_or_versions():
    text = "SD 1.5: {{ demo : miou.test-seen : .1f }}\n```\ngroundiff demo --size 0.25\n```\nunseen 52.2 `--size 1.5`\n"
    assert hand_typed_decimals(text) == ["unseen 52.2 `--size 1.5`"]


def test_every_template_has_a_target_and_every_target_a_template():
    templates = {p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*.md")}
    assert templates == set(render_docs.TARGETS)


def test_a_missing_key_names_the_template_line_file_and_key(docs_copy):
    _write_template(docs_copy, "README.md", "# groundiff\n\nmIoU {{ results/tables_3seeds.json : sets.tset-seen }}\n")

    with pytest.raises(render_docs.RenderError) as error:
        render_docs.render_template("README.md", docs_copy)
    message = str(error.value)
    assert message.startswith("README.md:3:")
    assert "results/tables_3seeds.json" in message and "'tset-seen'" in message and "'test-seen'" in message
    assert render_docs.main(["--check", "--root", str(docs_copy)]) == 2


def test_a_missing_file_is_named(docs_copy):
    _write_template(docs_copy, "README.md", "{{ use demo = results/nope.json }}\n")

    with pytest.raises(render_docs.RenderError, match=r"README.md:1: no file docs/results/nope.json"):
        render_docs.render_template("README.md", docs_copy)


def test_placeholders_format_index_subtract_divide_and_loop(docs_copy):
    results = docs_copy / "docs" / "results"
    (results / "toy.json").write_text(json.dumps({"a": {"b-c": 0.8125, "n": 3}, "rows": [{"x": 1.5}, {"x": None}]}))
    _write_template(
        docs_copy,
        "README.md",
        "{{ use toy = results/toy.json }}\n"
        "{{ toy : a.b-c : .1% }} {{ toy : a.n - a.b-c : .2f }} {{ toy : a.n / a.n }} {{ toy : rows.0.x }}\n"
        "{{ for row in toy : rows }}\n"
        "| {{ row : x : .2f }} |\n"
        "{{ end }}\n",
    )

    rendered = render_docs.render_template("README.md", docs_copy)
    assert rendered.splitlines()[1:] == ["81.2% 2.19 1.0 1.5", "| 1.50 |", "| – |"]


def test_an_unclosed_loop_is_named(docs_copy):
    _write_template(docs_copy, "README.md", "text\n{{ for row in results/e2e_floors.json : runs }}\n{{ row : seed }}\n")

    with pytest.raises(render_docs.RenderError, match=r"README.md:2: .*without its `\{\{ end \}\}`"):
        render_docs.render_template("README.md", docs_copy)


def test_the_package_graph_in_architecture_md_is_drawn_from_the_code(tmp_path, monkeypatch, capsys):
    package_graph = _load_script("package_graph")
    assert package_graph.main(["--check"]) == 0, capsys.readouterr().err
    edges = package_graph.imports()
    assert ("training", "evaluation") in edges and ("evaluation", "training") not in edges  # the cycle is gone
    stale = tmp_path / "ARCHITECTURE.md"
    stale.write_text(package_graph.DOC.read_text().replace("  training --> evaluation\n", ""))
    monkeypatch.setattr(package_graph, "DOC", stale)
    assert package_graph.main(["--check"]) == 1
    assert "stale package graph" in capsys.readouterr().err

"""`groundiff results`: run planning, sharing of equal runs, seeds, workers and the report (tiny pipeline)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import BrightnessScorer
from groundiff.apps.demo import generate_demo_sets
from groundiff.apps.results import TABLES, ResultsConfig, plan_runs, run_results
from groundiff.data.vocabulary import VOC_SPLIT1
from groundiff.labeling.stub import StubLabeler
from groundiff.sd.tiny import tiny_pipeline


def test_rows_that_train_alike_share_one_run_per_seed():
    config = ResultsConfig(seeds=(0, 1), tables=("table3", "table4", "table8"))
    runs, row_runs = plan_runs(config, train_samples=100)
    # "x and y", log-cosh Dice + BCE and dropout 0 are the same training: one run, three table rows.
    shared = {row_runs[("table3", '"x and y"')], row_runs[("table4", "log-cosh Dice + BCE")]}
    assert shared == {row_runs[("table8", "0")]}
    assert len(runs) == 2 * len({name for name in row_runs.values()})
    assert {run.seed for run in runs} == {0, 1}


def test_fractions_of_the_training_set_are_runs_of_their_own():
    runs, row_runs = plan_runs(ResultsConfig(seeds=(0,), tables=("table2",)), train_samples=100)
    quarter = row_runs[("table2", "baseline, 1/4 of the training set")]
    whole = row_runs[("table2", "baseline, whole training set")]
    assert quarter != whole
    assert dict(next(r.fields for r in runs if r.name == quarter))["max_train_samples"] == 25
    # The IQA rows only filter the test sets: they reuse the improved runs.
    assert (
        row_runs[("table2", "improved, whole, top 80% of each test set by IQA")]
        == row_runs[("table2", "improved, whole training set")]
    )


def test_rows_that_need_more_training_data_than_the_set_holds_are_not_run():
    config = ResultsConfig(seeds=(0,), tables=("table2",), train_samples=400)
    runs, row_runs = plan_runs(config, train_samples=100)
    quarter = row_runs[("table2", "improved, 1/4 of the training set")]
    assert row_runs[("table2", "improved, whole training set")] is None
    # 1/4 of the nominal 400 is the whole set at hand: no max_train_samples.
    assert dict(next(r.fields for r in runs if r.name == quarter))["max_train_samples"] is None
    assert {r.name for r in runs} == {quarter, row_runs[("table2", "baseline, 1/4 of the training set")]}


def test_bad_options_name_the_fix():
    with pytest.raises(ValueError, match="table9.*table2"):
        ResultsConfig(tables=("table9",))
    with pytest.raises(ValueError, match="--worker 2"):
        ResultsConfig(worker=2, workers=2)


def _results_config(tmp_path, **overrides) -> ResultsConfig:
    fields = dict(out=str(tmp_path), model="tiny-sd1", size=0.05, seeds=(0, 1), tables=("table4",), steps=2)
    return ResultsConfig(**{**fields, "progress": False, **overrides})


def _components():
    return dict(pipe=tiny_pipeline("sd1"), labeler=StubLabeler(VOC_SPLIT1.classes), scorer=BrightnessScorer())


def test_two_workers_share_the_runs_and_the_last_writes_the_report(tmp_path):
    components = _components()
    # The data first (sharing a set between ranks is tested in test_generate), then the runs, one
    # worker after the other: the first to finish leaves the report to the other.
    generate_demo_sets(_results_config(tmp_path).demo(), **components)
    first = run_results(_results_config(tmp_path, worker=0, workers=2), **components)
    # The first worker's report holds its own runs and names the other's as pending.
    partial = json.loads((tmp_path / "results.json").read_text())
    assert partial["pending"] and all("seed 1" in name for name in partial["pending"])
    row = partial["tables"]["table4"]["rows"][0]
    assert set(row["per_seed"]) == {"0"} and row["pending_seeds"] == [1]
    assert "(1 of 2 seeds so far)" in (tmp_path / "RESULTS.md").read_text()
    last = run_results(_results_config(tmp_path, worker=1, workers=2), **components)
    assert first is None and last is not None and last["pending"] == []
    report = json.loads((tmp_path / "results.json").read_text())
    rows = report["tables"]["table4"]["rows"]
    assert [row["label"] for row in rows] == [row.label for row in TABLES["table4"][1]]
    for row in rows:
        assert set(row["per_seed"]) == {"0", "1"}
        for kind, mean in row["mean"].items():
            per_seed = [row["per_seed"][seed][kind]["miou"] for seed in ("0", "1")]
            assert mean == pytest.approx(sum(per_seed) / 2)
            assert row["std"][kind] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5)
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert "| log-cosh Dice + BCE |" in markdown and "| cross-attention, DAAM threshold |" in markdown
    assert set(report["references"]["test-seen"]) >= {"predict_everything", "oracle", "cross_attention"}
    # A rerun finds every run evaluated and only rewrites the report; so does --report-only, without any model.
    again = run_results(_results_config(tmp_path), **_components())
    assert again is not None and again["tables"] == report["tables"]
    only = run_results(dataclasses.replace(_results_config(tmp_path), report_only=True))
    assert only is not None and only["tables"] == report["tables"]


def test_a_row_scored_on_fewer_sets_shows_dashes_and_one_seed_shows_no_spread():
    from groundiff.apps.results import results_markdown

    cell = {"miou": 70.0, "miou_ci95": [69.0, 71.0]}
    both = {"test-seen": cell, "truth-test-seen": cell}
    rows = [
        {
            "label": "all sets",
            "per_seed": {"0": both, "1": both},
            "pending_seeds": [],
            "mean": {"test-seen": 70.0, "truth-test-seen": 72.0},
            "std": {"test-seen": 0.5, "truth-test-seen": 0.5},
            "ci95_mean": {"test-seen": [69.0, 71.0], "truth-test-seen": [71.0, 73.0]},
            "paper": {"test-seen": 73.07, "test-mixed": None, "test-unseen": None},
            "train_seconds": 10.0,
        },
        {
            "label": "top 80%",
            "per_seed": {"0": {"test-seen": cell}},
            "pending_seeds": [1],
            "mean": {"test-seen": 75.0},
            "std": {"test-seen": 0.0},
            "ci95_mean": {"test-seen": [74.0, 76.0]},
            "paper": {"test-seen": None, "test-mixed": None, "test-unseen": None},
            "train_seconds": 10.0,
        },
    ]
    report = {
        "config": {"seeds": [0, 1], "data": "d", "threads": 1, "data_seed": 0},
        "sets": {},
        "keep_rate": {},
        "pending": ["improved seed 1"],
        "references": {},
        "tables": {"t": {"title": "T", "rows": rows}},
    }
    markdown = results_markdown(report)
    assert "| all sets | 70.0 ± 0.5 [69.0, 71.0] | 72.0 ± 0.5 [71.0, 73.0] |" in markdown
    assert "| top 80% (1 of 2 seeds so far) | 75.0 [74.0, 76.0] | – |" in markdown
    assert "Partial report: still running improved seed 1." in markdown

"""`groundiff demo` end to end, on the tiny random pipeline with stub labeler and scorer (fast)."""

from __future__ import annotations

import json

from conftest import BrightnessScorer
from groundiff.apps.demo import DemoConfig, run_demo
from groundiff.data.vocabulary import VOC_SPLIT1
from groundiff.labeling.stub import StubLabeler


def test_demo_writes_the_report_and_resumes(sd1_pipe, tmp_path):
    config = DemoConfig(out=str(tmp_path), size=0.05, model="tiny-sd1", steps=2, epochs=2, progress=False)
    components = dict(pipe=sd1_pipe, labeler=StubLabeler(VOC_SPLIT1.classes), scorer=BrightnessScorer())
    report = run_demo(config, **components)
    for key in ("miou", "miou_ci95", "miou_per_image", "classes_covered", "references", "attention_thresholds"):
        assert set(report[key]) == {"test-seen", "test-mixed", "test-unseen"}
    rows = {"predict_everything", "oracle", "cross_attention", "cross_attention_argmax"}
    assert set(report["references"]["test-unseen"]) == rows  # no truth sets or colour rule outside the mini world
    low, high = report["miou_ci95"]["test-seen"]
    assert low <= report["miou"]["test-seen"] <= high
    assert report["config"]["threads"] == 2 and "labeler_miou" in report
    assert json.loads((tmp_path / "report.json").read_text())["miou"] == report["miou"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| test-unseen |" in summary.splitlines()[4] and "results_examples.png" in summary
    assert "| predict every pixel (floor) |" in summary
    again = run_demo(config, **components)  # everything is on disk: only evaluation runs again
    assert again["miou"] == report["miou"] and again["seconds"] < report["seconds"]

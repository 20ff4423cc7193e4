"""`groundiff demo` end to end, on the tiny random pipeline with stub labeler and scorer (fast)."""

from __future__ import annotations

import json

from conftest import BrightnessScorer
from groundiff.data.vocabulary import VOC_SPLIT1
from groundiff.demo import DemoConfig, run_demo
from groundiff.testing import StubLabeler


def test_demo_writes_the_report_and_resumes(sd1_pipe, tmp_path):
    config = DemoConfig(out=str(tmp_path), size=0.05, model="tiny-sd1", steps=2, epochs=2, progress=False)
    components = dict(pipe=sd1_pipe, labeler=StubLabeler(VOC_SPLIT1.classes), scorer=BrightnessScorer())
    report = run_demo(config, **components)
    for key in ("miou", "miou_per_image", "attention_baseline_miou"):
        assert set(report[key]) == {"test-seen", "test-mixed", "test-unseen"}
    assert 0 < report["keep_rate"] <= 1 and report["seconds"] > 0 and "labeler_miou" in report
    assert json.loads((tmp_path / "report.json").read_text())["miou"] == report["miou"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| test-unseen |" in summary and "results_examples.png" in summary
    again = run_demo(config, **components)  # everything is on disk: only evaluation runs again
    assert again["miou"] == report["miou"] and again["seconds"] < report["seconds"]

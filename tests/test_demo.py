"""`groundiff demo` end to end, on the tiny random pipeline with stub labeler and scorer (fast)."""

from __future__ import annotations

import json

import pytest

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


@pytest.mark.slow
def test_sets_from_two_processes_equal_those_of_one(tmp_path):
    """The demo generates in one single-threaded process per thread; a sample must not depend on which
    process drew it (features do depend on the thread count: the single process runs one thread too)."""
    import torch

    from groundiff.apps.demo import generate_demo_sets, generate_demo_sets_in_processes
    from groundiff.data.shards import iter_records
    from groundiff.sd.pipelines import load_pipeline

    def config(folder: str, processes: int) -> DemoConfig:
        return DemoConfig(
            out=str(tmp_path / folder), size=0.01, steps=2, generation_processes=processes, progress=False
        )

    generate_demo_sets_in_processes(config("two", 2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generate_demo_sets(config("one", 1), pipe=load_pipeline("miniworld"))
    finally:
        torch.set_num_threads(threads)
    for kind in ("train", "test-unseen"):
        two = sorted(iter_records(tmp_path / "two" / "data" / kind), key=lambda r: r.index)
        one = sorted(iter_records(tmp_path / "one" / "data" / kind), key=lambda r: r.index)
        assert [r.index for r in two] == [r.index for r in one] == list(range(4))
        for a, b in zip(two, one, strict=True):
            assert a.classes == b.classes and (a.image == b.image).all()
            assert all((x == y).all() for x, y in zip(a.masks, b.masks, strict=True))
            for name in a.features:  # batches differ in size and content: float sums round differently
                torch.testing.assert_close(a.features[name].float(), b.features[name].float(), atol=2e-2, rtol=1e-2)

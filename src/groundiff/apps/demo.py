"""`groundiff demo`: the whole method on the shipped mini world, from prompts to an mIoU report.

Generate train/val/test sets with the tiny pipeline (features captured, labeled with the discard
rule, quality-scored, cross-attention kept for the test sets), train the grounding model, evaluate
the three test sets beside the training-free cross-attention reference, and write a report folder:
`summary.md`, `report.json`, the per-class chart and the overlay grid.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from groundiff.config import option
from groundiff.worlds import get_world

log = logging.getLogger(__name__)

TEST_SETS = ("test-seen", "test-mixed", "test-unseen")
DEMO_SETS = ("train", "val", *TEST_SETS)
# Renders with exact masks (mini world only), as big as the generated set of the same kind.
TRUTH_SETS = ("val", *TEST_SETS)
# Samples per set at --size 1 (under 5 minutes on 2 CPU cores); --size scales them all.
DEMO_SET_SIZES = {"train": 320, "val": 48, "test-seen": 48, "test-mixed": 48, "test-unseen": 48}


@dataclass
class DemoConfig:
    """A demo run. `size` multiplies every set size; `model` is any built-in or local pipeline."""

    out: str = option("demo", "report folder (data/, run/, summary.md, report.json)")
    size: float = option(1.0, "multiplies every set size (1: under 5 minutes on 2 CPU cores)")
    model: str = option("miniworld", "the diffusion model; the mini world brings its labeler and scorer")
    # Half the mini world's 20 steps: the same keep rate, and the demo fits in 5 minutes on 2 cores.
    steps: int = option(10, "denoising steps (the mini world's own default is 20)")
    guidance_scale: float = option(4.0, "classifier-free guidance scale")
    feature_storage: str = option("maps", "what the sets store: maps, or unet-input (maps recomputed when read)")
    feature_blocks: tuple[str, ...] | None = option(None, "comma-separated U-Net blocks to store (default: all)")
    model_size: Literal["slim", "reference"] = option(
        "slim", "grounding-model sizes: slim (the shipped checkpoint's decoder, width 128) or reference (width 512)"
    )
    # The best validation epoch of the size-1 demo was the 8th in each measured run: two more cost 25 s.
    epochs: int = option(8, "grounding-model training epochs")
    batch_size: int = option(4, "training batch size")
    seed: int = option(0, "seed of the sets and the training")
    threads: int | None = option(2, "torch CPU threads; results repeat exactly for a given seed and thread count")
    generation_processes: int | None = option(
        None, "processes that generate the sets, one thread each (default: --threads)"
    )
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"--size must be positive, got {self.size}.")
        if self.generation_processes is not None and self.generation_processes < 1:
            raise ValueError(f"--generation-processes must be at least 1, got {self.generation_processes}.")

    def processes(self) -> int:
        """Generation processes: small convolutions gain little from a second thread, much from a second process."""
        return self.generation_processes or self.threads or 1

    def set_size(self, kind: str) -> int:
        return max(4, round(DEMO_SET_SIZES[kind] * self.size))


def run_demo(
    config: DemoConfig, *, pipe: Any = None, labeler: Any = None, scorer: Any = None, labeler_miou: float | None = None
) -> dict[str, Any]:
    """Run the demo; resumable (finished sets and epochs are kept). Returns the `report.json` content.

    `pipe`, `labeler`, `scorer` and `labeler_miou` replace the mini world's own (tests use tiny ones).
    """
    # Imported here so that the CLI can read DemoConfig without loading torch-heavy modules.
    from groundiff.apps.runs import Evaluation, train_and_evaluate
    from groundiff.files import write_json_atomic
    from groundiff.model.config import MODEL_SIZES
    from groundiff.training.config import TrainConfig

    start = time.perf_counter()
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    out = Path(config.out)
    world = get_world(config.model)
    # 1. Data: one set of each kind, generated once (a rerun finds them complete).
    if pipe is None and labeler is None and scorer is None and config.processes() > 1:
        generate_demo_sets_in_processes(config)
    if world is not None and pipe is None:
        pipe = world.pipeline(device="cpu")
    generate_demo_sets(config, pipe=pipe, labeler=labeler, scorer=scorer)
    truth_sets = make_demo_truth_sets(config, pipe=pipe)
    keep_rates = read_keep_rates(out / "data")
    # 2. The grounding model, the improved method.
    run = out / "run"
    train_config = TrainConfig(
        train=str(out / "data" / "train"),
        val=str(out / "data" / "val"),
        out=str(run),
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        threads=config.threads,
        progress=config.progress,
        model=dict(MODEL_SIZES[config.model_size]),
    )
    # 3. Evaluation beside the floors, ceilings and references, on generated and truth sets.
    tests = [out / "data" / kind for kind in TEST_SETS] + [f for f in truth_sets if not f.name.endswith("-val")]
    vals = [out / "data" / "val"] + [f for f in truth_sets if f.name.endswith("-val")]
    outcome = train_and_evaluate(
        train_config, [Evaluation(tuple(tests), out / "results.json", references=True, val=tuple(vals))]
    )
    evaluation = outcome.evaluations[0]
    if labeler_miou is None and world is not None and world.labeler_accuracy is not None:
        labeler_miou = world.labeler_accuracy(labeler or world.labeler())
    results = evaluation.results
    report = {
        "miou": {k: round(v["miou"], 2) for k, v in results.items()},
        "miou_ci95": {k: [round(b, 2) for b in v["miou_ci95"]] for k, v in results.items()},
        "miou_per_image": {k: round(v["miou_per_image"], 2) for k, v in results.items()},
        "classes_covered": {k: v["classes_covered"] for k, v in results.items()},
        "target": {k: v["target"] for k, v in results.items()},
        "references": {k: {r: round(row["miou"], 2) for r, row in v["references"].items()} for k, v in results.items()},
        "attention_thresholds": {
            k: {r: row["threshold"] for r, row in v["references"].items() if "threshold" in row}
            for k, v in results.items()
        },
        "keep_rate": round(sum(keep_rates.values()) / len(keep_rates), 4),
        "keep_rate_per_set": {k: round(v, 4) for k, v in keep_rates.items()},
        "labeler_miou": labeler_miou,
        "seconds": round(time.perf_counter() - start, 1),
        "config": vars(config),
    }
    write_json_atomic(out / "report.json", report)
    (out / "summary.md").write_text(_summary(report, evaluation.results, [p.name for p in evaluation.pictures]))
    return report


def generate_demo_sets(
    config: DemoConfig, *, pipe: Any, labeler: Any = None, scorer: Any = None, worker: int = 0, workers: int = 1
) -> None:
    """This worker's share of the demo's five sets under `<out>/data/` (the last worker writes each manifest)."""
    from groundiff.generation.config import GenerateConfig
    from groundiff.generation.generate import generate_set

    for kind in DEMO_SETS:
        generate_config = GenerateConfig(
            out=str(Path(config.out) / "data" / kind),
            set=kind,
            model=config.model,
            # "auto" is the model's own (the mini world's); objects passed in are recorded as "custom".
            labeler="custom" if labeler is not None else "auto",
            scorer="custom" if scorer is not None else "auto",
            num_samples=config.set_size(kind),
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            seed=config.seed,
            batch_size=16,
            attention_maps=kind != "train",  # the val set tunes the cross-attention threshold
            feature_storage=config.feature_storage,
            feature_blocks=config.feature_blocks,
            progress=config.progress,
        )
        generate_set(generate_config, pipe=pipe, labeler=labeler, scorer=scorer, worker=worker, workers=workers)


def generate_demo_sets_in_processes(config: DemoConfig) -> None:
    """The demo's sets, written by `config.processes()` spawned processes of one thread each.

    Sample *i* of a set does not depend on which process draws it, so the sets equal those of one
    single-threaded process (features, being float sums, do change with the thread count). A failed
    or interrupted process leaves whole shards; the next run generates the rest.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    processes = config.processes()
    # spawn, not fork: a forked child would inherit torch's thread pool and locks mid-state.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        shares = [pool.submit(_generate_share, config, worker, processes) for worker in range(processes)]
        for share in shares:
            share.result()  # re-raises a worker's error here, naming it


def _generate_share(config: DemoConfig, worker: int, workers: int) -> None:
    import torch

    from groundiff.sd.pipelines import load_pipeline

    torch.set_num_threads(1)
    pipe = load_pipeline(config.model, device="cpu")
    # One progress bar: the first process's share stands for all of them.
    share_config = dataclasses.replace(config, progress=config.progress and worker == 0)
    generate_demo_sets(share_config, pipe=pipe, worker=worker, workers=workers)


def make_demo_truth_sets(config: DemoConfig, *, pipe: Any) -> list[Path]:
    """The world's truth sets beside the generated ones, `<out>/data/truth-<kind>`; none for a world
    without a renderer (or a plain model)."""
    world = get_world(config.model)
    if world is None or world.truth_set is None:
        return []
    return [
        world.truth_set(
            pipe=pipe,
            out=str(Path(config.out) / "data" / f"truth-{kind}"),
            set=kind,
            num_samples=config.set_size(kind),
            seed=config.seed,
            steps=config.steps,
            feature_blocks=config.feature_blocks,
            progress=config.progress,
        )
        for kind in TRUTH_SETS
    ]


def read_keep_rates(data: Path) -> dict[str, float]:
    """Share of generated samples kept by the discard rule, per demo set, from the manifests in `data`."""
    from groundiff.data.manifest import read_manifest

    rates = {}
    for kind in DEMO_SETS:
        manifest = read_manifest(data / kind)
        rates[kind] = manifest["samples"] / (manifest["samples"] + manifest["discarded"])
    return rates


def _summary(report: dict[str, Any], results: dict[str, Any], pictures: list[str]) -> str:
    from groundiff.evaluation.evaluate import results_table

    lines = [
        "# groundiff demo",
        "",
        f"Model `{report['config']['model']}`, {report['config']['steps']} steps, seed {report['config']['seed']}, "
        f"size {report['config']['size']}; {report['seconds']:.0f} s in all.",
        "",
        results_table(results),
        f"Keep rate of the discard rule: {report['keep_rate']:.1%}; labeler mIoU against exact render masks: "
        f"{report['labeler_miou']}.",
        "",
        *[f"![{name}]({name})" for name in pictures],
        "",
    ]
    return "\n".join(lines)

"""The `groundiff` command: a thin layer that parses arguments and calls one library function each."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import groundiff
from groundiff.config import add_dataclass_flags, build_config


def _cmd_env(args: argparse.Namespace) -> int:
    from groundiff.environment import environment_report

    for key, value in environment_report().items():
        print(f"{key:<13}{value}")
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    """generate one image and print the U-Net features captured"""
    from groundiff.capture import GenerationSettings, generate_with_features
    from groundiff.capture.config import CaptureRunConfig
    from groundiff.capture.export import export_generation
    from groundiff.sd.pipelines import load_pipeline

    config = build_config(CaptureRunConfig, args.config, args)
    pipe = load_pipeline(config.model, dtype=config.dtype, device=config.device)
    settings = GenerationSettings(num_inference_steps=config.steps, guidance_scale=config.guidance_scale)
    output = generate_with_features(pipe, [config.prompt], [config.seed], settings=settings, capture=config.capture())
    features = output.features
    print(f"prompt: {config.prompt!r}  seed {config.seed}  image {output.images.shape[1:]}")
    print(f"captured {len(features.describe())} maps, {features.nbytes_per_image() / 1e6:.3f} MB per image:")
    print("\n".join(features.describe()))
    step = features.steps[-1]
    for side, maps in features.by_resolution(step).items():
        print(f"level {side:>3}x{side:<3} {len(maps)} maps, {sum(m.shape[1] for m in maps)} channels")
    if config.out:
        for path in export_generation(output, Path(config.out)):
            print(f"wrote {path}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    """generate a set of images, U-Net features and masks into shards"""
    from groundiff.generation.config import GenerateConfig
    from groundiff.generation.generate import generate_set, worker_from_environment

    config = build_config(GenerateConfig, args.config, args)
    worker, workers = worker_from_environment(args.worker, args.workers)
    report = generate_set(config, worker=worker, workers=workers)
    for message in report.messages:
        print(message)
    print(
        f"{config.set} -> {report.folder}: worker {worker}/{workers} generated {report.generated}, "
        f"discarded {report.discarded}, found {report.already_done} already on disk"
    )
    if report.complete:
        from groundiff.data.manifest import read_manifest

        manifest = read_manifest(report.folder)
        print(
            f"set complete: {manifest['samples']} samples, {manifest['discarded']} discarded, "
            f"{manifest['bytes_per_sample'] / 1e6:.3f} MB per sample"
        )
    return 0


def _cmd_truth_set(args: argparse.Namespace) -> int:
    """make a mini-world truth set: renders with exact masks, features from one U-Net pass (for evaluate)"""
    from groundiff.data.manifest import read_manifest
    from groundiff.miniworld.truth import TruthSetConfig, make_truth_set

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = build_config(TruthSetConfig, args.config, args)
    folder = make_truth_set(config)
    manifest = read_manifest(folder)
    print(f"truth set {config.set} -> {folder}: {manifest['samples']} renders with exact masks")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    """relabel a generated set with another labeler, into a new set"""
    from groundiff.generation.annotate import label_set
    from groundiff.generation.config import LabelConfig
    from groundiff.labeling.registry import load_labeler

    config = build_config(LabelConfig, args.config, args)
    report = label_set(Path(config.data), Path(config.out), load_labeler(config.labeler), config.labeler)
    print(
        f"relabeled {config.data} with {config.labeler} -> {report.folder}: kept {report.kept}, "
        f"dropped {report.dropped} (a prompted class not found), {report.already_done} already done"
    )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    """CLIP-IQA quality score of every image of one or more sets"""
    from groundiff.data.scores import SCORES_FILE
    from groundiff.generation.annotate import score_set
    from groundiff.generation.config import ScoreConfig
    from groundiff.scoring import load_scorer

    config = build_config(ScoreConfig, args.config, args)
    scorer = load_scorer(config.scorer)
    if scorer is None:
        raise ValueError("--scorer none gives no scores; name a CLIP model, e.g. --scorer miniworld.")
    for folder in map(Path, config.data):
        scores = score_set(folder, scorer)
        values = sorted(scores.values())
        print(f"{folder / SCORES_FILE}: {len(values)} images, median IQA {values[len(values) // 2]:.3f}")
    return 0


def _cmd_synthesize(args: argparse.Namespace) -> int:
    """a segmentation dataset (COCO, VOC, shards) of any classes, labelled by the grounding model"""
    from groundiff.apps.synthesize import SynthesizeConfig, synthesize
    from groundiff.generation.generate import worker_from_environment

    config = build_config(SynthesizeConfig, args.config, args)
    worker, workers = worker_from_environment(args.worker, args.workers)
    report = synthesize(config, worker=worker, workers=workers)
    print("\n".join(report.messages) if report.messages else f"kept {report.kept} of {report.generated} images")
    for name, row in report.per_class.items():
        print(f"{name:<24} kept in {row['kept']:>6} of {row['generated']:>6} images")
    if report.complete:
        print(f"dataset: {report.out / 'dataset'} (COCO, VOC); shards: {report.out / 'labelled'}")
    return 0


def _cmd_downstream(args: argparse.Namespace) -> int:
    """train a segmenter on synthesized data per label source and test it on truth renders"""
    from groundiff.apps.downstream import DownstreamConfig, run_downstream

    config = build_config(DownstreamConfig, args.config, args)
    report = run_downstream(config)
    for source, row in report["rows"].items():
        low, high = row["miou_ci95"]
        print(f"{source:<16} mIoU {row['miou']:5.1f} [{low:5.1f}, {high:5.1f}] on {row['samples']} renders")
    print(f"wrote {Path(config.out) / 'downstream.json'}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """train the grounding model (best checkpoint by validation mIoU)"""
    from groundiff.training.config import TrainConfig
    from groundiff.training.loop import resume, train

    config = build_config(TrainConfig, args.config, args)
    report = (resume if args.resume else train)(config)
    print(
        f"best val mIoU {report.best_val_miou:.2f} at epoch {report.best_epoch} -> {report.out / 'best'}; "
        f"{report.samples_per_s:.1f} samples/s, {report.data_wait_fraction:.1%} of the time waiting for data"
    )
    return 0


def _cmd_tune_answers(args: argparse.Namespace) -> int:
    """choose a checkpoint's "not found" rule on a validation set and record it in the checkpoint"""
    from groundiff.training.answer_rule import tune_checkpoint_answers
    from groundiff.training.config import TuneAnswersConfig

    config = build_config(TuneAnswersConfig, args.config, args)
    choice = tune_checkpoint_answers(
        Path(config.checkpoint), config.val, min_t_acc=config.min_t_acc, rule=config.rule, batch_size=config.batch_size
    )
    if choice["answer_weights"] is None:
        rule = f"presence > {choice['presence_threshold']:.2f} and own share >= {choice['min_own_share']:.1f}"
    else:
        rule = "its answer score > 0 (" + ", ".join(f"{w:+.2f}" for w in choice["answer_weights"]) + ")"
    print(
        f"{config.checkpoint}: found when {rule}; on validation N-acc {choice['n_acc']:.1f} %, "
        f"T-acc {choice['t_acc']:.1f} %"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """mIoU of a trained checkpoint on test sets beside floors, ceilings and references"""
    from groundiff.evaluation.config import EvaluateConfig
    from groundiff.evaluation.evaluate import evaluate_checkpoint, results_table

    config = build_config(EvaluateConfig, args.config, args)
    report = evaluate_checkpoint(
        Path(config.checkpoint),
        [Path(d) for d in config.data],
        Path(config.out),
        top_quality=config.top_quality,
        attention_baseline=config.attention_baseline,
        val=[Path(v) for v in config.val or ()],
        absent_queries=config.absent_queries,
        cross_model=config.cross_model,
    )
    print(results_table(report.results), end="")
    for path in (report.json_path, report.markdown_path, *report.pictures):
        print(f"wrote {path}")
    return 0


def _cmd_ground(args: argparse.Namespace) -> int:
    """generate an image and a mask for every object of the prompt, or ground an existing image (--image)"""
    from groundiff.ground import GroundConfig, ground_and_write

    config = build_config(GroundConfig, args.config, args)
    result, paths = ground_and_write(config)
    for name, mask in result.masks.items():
        print(f"{name:<20} {mask.mean():6.1%} of the image" if result.found[name] else f"{name:<20} not found")
    for path in paths:
        print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """run the whole method on the shipped mini world"""
    from groundiff.apps.demo import DemoConfig, run_demo

    config = build_config(DemoConfig, args.config, args)
    report = run_demo(config)
    print((Path(config.out) / "summary.md").read_text())
    print(f"report: {Path(config.out) / 'report.json'} ({report['seconds']:.0f} s)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """a web page that draws a prompt and shows each object's mask (needs the web extra)"""
    from groundiff.apps.serve import ServeConfig, serve

    config = build_config(ServeConfig, args.config, args)
    serve(config)
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    """measure the paper's Tables 2, 3, 4 and 8 on the mini world over seeds"""
    from groundiff.apps.results import ResultsConfig, run_results

    config = build_config(ResultsConfig, args.config, args)
    report = run_results(config)
    if report is None:
        print(f"worker {config.worker}: runs done; the last worker to finish writes {config.out}/RESULTS.md")
    else:
        print((Path(config.out) / "RESULTS.md").read_text())
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    """run one of the paper's experiments by name ('list' lists them)"""
    from groundiff.apps.experiments import RESULTS_FILE, ExperimentConfig, experiment_names, run_experiment

    config = build_config(ExperimentConfig, args.config, args)
    if config.name == "list":
        print("\n".join(experiment_names()))
        return 0
    row = run_experiment(config)
    print(f"{row.as_row()} -> appended to {Path(config.out) / RESULTS_FILE}")
    return 0


# Subcommands whose description says more than their one-line help, and examples shown below the options.
_DESCRIPTIONS = {
    "evaluate": (
        "Category-wise mIoU with 95% bootstrap intervals of a checkpoint on generated test sets (scored "
        "against the labeler's masks) and truth sets (mini-world renders scored against their exact masks; "
        "make them with `groundiff truth-set`), beside predict-every-pixel, the oracle at the model's output "
        "resolution, the colour threshold and the labeler (mini world), and optionally the cross-attention "
        "reference with its threshold tuned on --val."
    ),
    "tune-answers": (
        "Choose when a checkpoint answers an object 'not found': the presence probability it must exceed and "
        "the share of its mask it must keep against the other objects asked (so that a 'red disc' painting "
        "the red ring another query names is turned away). The rule with the highest N-acc among those whose "
        "T-acc on the validation set reaches --min-t-acc is written into the checkpoint; `groundiff train` "
        "already does this for models trained with --negative-fraction. --rule score fits instead a score over "
        "statistics of each mask that read alike for every class (peak logit, area, own share)."
    ),
}
_EXAMPLES = {
    "tune-answers": "Example: groundiff tune-answers --checkpoint run/best --val truth/val",
    "evaluate": (
        "Example: groundiff evaluate --checkpoint run/best --data data/test-seen truth/test-seen "
        "--val data/val truth/val --attention-baseline --out eval.json"
    ),
}


def _config_command(
    commands: argparse._SubParsersAction, name: str, cls: type, help_text: str
) -> argparse.ArgumentParser:
    """A subcommand whose arguments are the fields of a config dataclass, readable from `--config FILE` too."""
    parser = commands.add_parser(
        name,
        help=help_text,
        description=f"{_DESCRIPTIONS.get(name, help_text + '.')} Every {cls.__name__} field is a flag and a key "
        "of the --config file; flags win.",
        epilog=_EXAMPLES.get(name),
    )
    parser.add_argument("--config", default=None, help=f"YAML, TOML or JSON file with {cls.__name__} fields")
    add_dataclass_flags(parser, cls)
    return parser


def build_parser() -> argparse.ArgumentParser:
    # The config classes are light to import; the commands import what they run.
    from groundiff.apps.demo import DemoConfig
    from groundiff.apps.downstream import DownstreamConfig
    from groundiff.apps.experiments import ExperimentConfig
    from groundiff.apps.results import ResultsConfig
    from groundiff.apps.serve import ServeConfig
    from groundiff.apps.synthesize import SynthesizeConfig
    from groundiff.capture.config import CaptureRunConfig
    from groundiff.evaluation.config import EvaluateConfig
    from groundiff.generation.config import GenerateConfig, LabelConfig, ScoreConfig
    from groundiff.ground import GroundConfig
    from groundiff.miniworld.truth import TruthSetConfig
    from groundiff.training.config import TrainConfig, TuneAnswersConfig

    # Each command: its name, its config and the function that runs it, whose docstring is its help.
    commands_table: list[tuple[str, type, Callable[[argparse.Namespace], int]]] = [
        ("capture", CaptureRunConfig, _cmd_capture),
        ("generate", GenerateConfig, _cmd_generate),
        ("truth-set", TruthSetConfig, _cmd_truth_set),
        ("label", LabelConfig, _cmd_label),
        ("score", ScoreConfig, _cmd_score),
        ("synthesize", SynthesizeConfig, _cmd_synthesize),
        ("downstream", DownstreamConfig, _cmd_downstream),
        ("train", TrainConfig, _cmd_train),
        ("tune-answers", TuneAnswersConfig, _cmd_tune_answers),
        ("evaluate", EvaluateConfig, _cmd_evaluate),
        ("ground", GroundConfig, _cmd_ground),
        ("demo", DemoConfig, _cmd_demo),
        ("serve", ServeConfig, _cmd_serve),
        ("results", ResultsConfig, _cmd_results),
        ("experiment", ExperimentConfig, _cmd_experiment),
    ]
    parser = argparse.ArgumentParser(
        prog="groundiff",
        description="Grounded generation: masks for the objects a Stable Diffusion prompt names.",
    )
    parser.add_argument("--version", action="version", version=f"groundiff {groundiff.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("env", help="print library versions, device and dtype").set_defaults(run=_cmd_env)
    parsers = {}
    for name, cls, run in commands_table:
        parsers[name] = _config_command(commands, name, cls, run.__doc__ or "")
        parsers[name].set_defaults(run=run)
    # Options of how a command runs, beside its config.
    for name in ("generate", "synthesize"):
        parsers[name].add_argument(
            "--worker", type=int, default=None, help="this process's rank (default: RANK or Slurm)"
        )
        parsers[name].add_argument("--workers", type=int, default=None, help="number of processes sharing the set")
    parsers["train"].add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    return parser


# What a stopped command leaves, and how to go on (every command writes its results atomically).
_AFTER_STOP = {
    "generate": "every finished shard is kept; run the same command again to generate the rest",
    "train": "the last finished epoch is kept in --out/last; run the same command with --resume to continue",
    "synthesize": "every finished shard is kept; run the same command again to finish the dataset",
    "downstream": "finished sets and label sources are kept in --out; run the same command again to go on",
}


class Stopped(KeyboardInterrupt):
    """SIGTERM (kill, Slurm) turned into an exception that unwinds like Ctrl-C, so cleanups run."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; `argv` without the program name (tests call `main([...])` directly).

    Errors print one line naming the bad input and the fix (with `-v`, the traceback instead); Ctrl-C
    and SIGTERM print what was kept. Returns 0, 2 for an error, 128 + the signal number when stopped.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return int(args.run(args))
    except KeyboardInterrupt as stop:
        if args.verbose:
            raise
        signum = signal.SIGTERM if isinstance(stop, Stopped) else signal.SIGINT
        kept = _AFTER_STOP.get(args.command, "run the same command again to finish")
        print(f"groundiff {args.command}: stopped by {signum.name}; {kept}.", file=sys.stderr)
        return 128 + signum
    except (ValueError, OSError, RuntimeError, FloatingPointError, ImportError) as error:
        if args.verbose:
            raise  # the full traceback, for bug reports
        print(f"groundiff {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.verbose:
            raise
        print(
            f"groundiff {args.command}: unexpected error {type(error).__name__}: {error} "
            f"(run again with -v for the traceback, and report it)",
            file=sys.stderr,
        )
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

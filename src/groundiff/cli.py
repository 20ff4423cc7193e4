"""The `groundiff` command: a thin layer that parses arguments and calls one library function each."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import groundiff


def _cmd_env(args: argparse.Namespace) -> int:
    from groundiff.environment import environment_report

    for key, value in environment_report().items():
        print(f"{key:<13}{value}")
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    from groundiff.capture import CaptureConfig, GenerationSettings, generate_with_features
    from groundiff.capture.export import export_generation
    from groundiff.sd.pipelines import load_pipeline

    config = CaptureConfig(
        blocks=tuple(args.blocks.split(",")) if args.blocks else None,
        steps=tuple(int(s) for s in args.capture_steps.split(",")),
        layout=args.layout,
    )
    pipe = load_pipeline(args.model, dtype=args.dtype, device=args.device)
    settings = GenerationSettings(num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    output = generate_with_features(pipe, [args.prompt], [args.seed], settings=settings, capture=config)
    features = output.features
    print(f"prompt: {args.prompt!r}  seed {args.seed}  image {output.images.shape[1:]}")
    print(f"captured {len(features.describe())} maps, {features.nbytes_per_image() / 1e6:.3f} MB per image:")
    print("\n".join(features.describe()))
    step = features.steps[-1]
    for side, maps in features.by_resolution(step).items():
        print(f"level {side:>3}x{side:<3} {len(maps)} maps, {sum(m.shape[1] for m in maps)} channels")
    if args.out:
        for path in export_generation(output, Path(args.out)):
            print(f"wrote {path}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from groundiff.config import build_config
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
        manifest = json.loads((report.folder / "manifest.json").read_text())
        print(
            f"set complete: {manifest['samples']} samples, {manifest['discarded']} discarded, "
            f"{manifest['bytes_per_sample'] / 1e6:.3f} MB per sample"
        )
    return 0


def _cmd_truth_set(args: argparse.Namespace) -> int:
    from groundiff.config import build_config
    from groundiff.miniworld.truth import TruthSetConfig, make_truth_set

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = build_config(TruthSetConfig, args.config, args)
    folder = make_truth_set(config)
    manifest = json.loads((folder / "manifest.json").read_text())
    print(f"truth set {config.set} -> {folder}: {manifest['samples']} renders with exact masks")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from groundiff.generation.annotate import label_set
    from groundiff.labeling.registry import load_labeler

    report = label_set(Path(args.data), Path(args.out), load_labeler(args.labeler), args.labeler)
    print(
        f"relabeled {args.data} with {args.labeler} -> {report.folder}: kept {report.kept}, "
        f"dropped {report.dropped} (a prompted class not found), {report.already_done} already done"
    )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from groundiff.data.scores import SCORES_FILE
    from groundiff.generation.annotate import score_set
    from groundiff.scoring import load_scorer

    scorer = load_scorer(args.scorer)
    if scorer is None:
        raise ValueError("--scorer none gives no scores; name a CLIP model, e.g. --scorer miniworld.")
    for folder in map(Path, args.data):
        scores = score_set(folder, scorer)
        values = sorted(scores.values())
        print(f"{folder / SCORES_FILE}: {len(values)} images, median IQA {values[len(values) // 2]:.3f}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from groundiff.config import build_config
    from groundiff.training.config import TrainConfig
    from groundiff.training.loop import resume, train

    config = build_config(TrainConfig, args.config, args)
    report = (resume if args.resume else train)(config)
    print(
        f"best val mIoU {report.best_val_miou:.2f} at epoch {report.best_epoch} -> {report.out / 'best'}; "
        f"{report.samples_per_s:.1f} samples/s, {report.data_wait_fraction:.1%} of the time waiting for data"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from groundiff.evaluation.evaluate import evaluate_checkpoint, results_table

    report = evaluate_checkpoint(
        Path(args.checkpoint),
        [Path(d) for d in args.data],
        Path(args.out),
        top_quality=args.top_quality,
        attention_baseline=args.attention_baseline,
        val=[Path(v) for v in args.val or []],
    )
    print(results_table(report.results), end="")
    for path in (report.json_path, report.markdown_path, *report.pictures):
        print(f"wrote {path}")
    return 0


def _cmd_ground(args: argparse.Namespace) -> int:
    from groundiff.ground import ground, grounding_paths, objects_from_prompt, write_grounding
    from groundiff.model.checkpoint import load_grounding_model
    from groundiff.sd.pipelines import load_pipeline

    model, meta = load_grounding_model(Path(args.checkpoint))
    objects = args.objects or objects_from_prompt(args.prompt, meta.set_config["template"])
    grounding_paths(Path(args.out), objects)  # bad names or --out refused before the pipeline loads
    pipe = load_pipeline(args.model or meta.text_model, dtype=args.dtype, device=args.device)
    result = ground(pipe, model.to(pipe.device), meta, args.prompt, objects=objects, seed=args.seed)
    for name, mask in result.masks.items():
        print(f"{name:<20} {mask.mean():6.1%} of the image")
    for path in write_grounding(result, Path(args.out)):
        print(f"wrote {path}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from groundiff.apps.experiments import RESULTS_FILE, experiment_names, run_experiment

    if args.name == "list":
        print("\n".join(experiment_names()))
        return 0
    overrides = {"epochs": args.epochs} if args.epochs else {}
    if args.model_config:
        from groundiff.config import read_config_file

        overrides.update(read_config_file(Path(args.model_config)))
    row = run_experiment(
        args.name,
        train_set=Path(args.train),
        val_set=Path(args.val),
        test_sets=[Path(t) for t in args.test],
        out=Path(args.out),
        seed=args.seed,
        overrides=overrides,
    )
    print(f"{row.as_row()} -> appended to {Path(args.out) / RESULTS_FILE}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from groundiff.apps.demo import DemoConfig, run_demo
    from groundiff.config import build_config

    config = build_config(DemoConfig, args.config, args)
    report = run_demo(config)
    print((Path(config.out) / "summary.md").read_text())
    print(f"report: {Path(config.out) / 'report.json'} ({report['seconds']:.0f} s)")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from groundiff.apps.results import ResultsConfig, run_results
    from groundiff.config import build_config

    config = build_config(ResultsConfig, args.config, args)
    report = run_results(config)
    if report is None:
        print(f"worker {config.worker}: runs done; the last worker to finish writes {config.out}/RESULTS.md")
    else:
        print((Path(config.out) / "RESULTS.md").read_text())
    return 0


def _config_command(
    commands: argparse._SubParsersAction, name: str, cls: type, help_text: str, skip: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """A subcommand whose options are the fields of a config dataclass, readable from `--config FILE` too."""
    from groundiff.config import add_dataclass_flags

    parser = commands.add_parser(
        name,
        help=help_text,
        description=f"{help_text}. Every {cls.__name__} field is a flag and a key of the --config file; flags win.",
    )
    parser.add_argument("--config", default=None, help=f"YAML, TOML or JSON file with {cls.__name__} fields")
    add_dataclass_flags(parser, cls, skip)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundiff",
        description="Grounded generation: masks for the objects a Stable Diffusion prompt names.",
    )
    parser.add_argument("--version", action="version", version=f"groundiff {groundiff.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    env = commands.add_parser("env", help="print library versions, device and dtype")
    env.set_defaults(run=_cmd_env)

    capture = commands.add_parser("capture", help="generate one image and print the U-Net features captured")
    capture.add_argument("prompt", nargs="?", default="a photograph of a dog and a sofa")
    capture.add_argument("--model", default="tiny-sd1", help="built-in name, hub id, diffusers folder or .safetensors")
    capture.add_argument("--steps", type=int, default=50, help="denoising steps")
    capture.add_argument("--guidance-scale", type=float, default=7.5)
    capture.add_argument("--seed", type=int, default=0)
    capture.add_argument("--blocks", default=None, help="comma-separated blocks (down0,…,mid,up0,…); default all")
    capture.add_argument("--capture-steps", default="-1", help="comma-separated step indices; -1 is the last")
    capture.add_argument("--layout", choices=["cond", "uncond+cond"], default="cond")
    capture.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    capture.add_argument("--device", default=None, help="cpu, cuda, …; default cuda when available")
    capture.add_argument("--out", default=None, help="folder for the image PNG and features safetensors")
    capture.set_defaults(run=_cmd_capture)

    from groundiff.generation.config import GenerateConfig

    generate = _config_command(
        commands, "generate", GenerateConfig, "generate a set of images, U-Net features and masks into shards"
    )
    generate.add_argument("--worker", type=int, default=None, help="this process's rank (default: RANK or Slurm)")
    generate.add_argument("--workers", type=int, default=None, help="number of processes sharing the set")
    generate.set_defaults(run=_cmd_generate)

    from groundiff.miniworld.truth import TruthSetConfig

    truth = _config_command(
        commands,
        "truth-set",
        TruthSetConfig,
        "make a mini-world truth set: renders with exact masks, features from one U-Net pass (for evaluate)",
    )
    truth.set_defaults(run=_cmd_truth_set)

    label = commands.add_parser("label", help="relabel a generated set with another labeler, into a new set")
    label.add_argument("--data", required=True, help="a complete set folder")
    label.add_argument("--labeler", required=True, help="maskrcnn, maskrcnn-v1 or miniworld")
    label.add_argument("--out", required=True, help="folder of the relabeled set")
    label.set_defaults(run=_cmd_label)

    score = commands.add_parser("score", help="CLIP-IQA quality score of every image of one or more sets")
    score.add_argument("--data", required=True, nargs="+", help="set folders; scores go to DIR/scores.json")
    score.add_argument("--scorer", default="miniworld", help="miniworld, a CLIP hub id or folder, or clipiqa+")
    score.set_defaults(run=_cmd_score)

    from groundiff.training.config import TrainConfig

    train = _config_command(
        commands, "train", TrainConfig, "train the grounding model (best checkpoint by validation mIoU)", ("model",)
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    train.set_defaults(run=_cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="mIoU of a trained checkpoint on test sets beside floors, ceilings and references",
        description=(
            "Category-wise mIoU with 95%% bootstrap intervals of a checkpoint on generated test sets (scored "
            "against the labeler's masks) and truth sets (mini-world renders scored against their exact masks; "
            "make them with `groundiff truth-set`), beside predict-every-pixel, the oracle at the model's output "
            "resolution, the colour threshold and the labeler (mini world), and optionally the cross-attention "
            "reference with its threshold tuned on --val. Example: groundiff evaluate --checkpoint run/best "
            "--data data/test-seen truth/test-seen --val data/val truth/val --attention-baseline --out eval.json"
        ),
    )
    evaluate.add_argument("--checkpoint", required=True, help="a checkpoint folder (runs/.../best)")
    evaluate.add_argument(
        "--data", required=True, nargs="+", help="test set folders: generated sets and/or truth sets, one per kind"
    )
    evaluate.add_argument(
        "--val",
        nargs="+",
        default=None,
        help="validation sets (generated and/or truth, with attention maps) on which the cross-attention "
        "thresholds are chosen; without them DAAM's 0.4 is used",
    )
    evaluate.add_argument("--out", required=True, help="results JSON; .md table and PNG pictures go beside it")
    evaluate.add_argument("--top-quality", type=float, default=None, help="keep this top fraction by IQA score")
    evaluate.add_argument(
        "--attention-baseline", action="store_true", help="also score the cross-attention reference (DAAM-style)"
    )
    evaluate.set_defaults(run=_cmd_evaluate)

    grounded = commands.add_parser("ground", help="generate an image and a mask for every object of the prompt")
    grounded.add_argument("prompt")
    grounded.add_argument("--checkpoint", required=True, help="a trained grounding checkpoint folder")
    grounded.add_argument("--model", default=None, help="the diffusion model; default: the checkpoint's")
    grounded.add_argument("--objects", nargs="+", default=None, help="object names; default: parsed from the prompt")
    grounded.add_argument("--seed", type=int, default=0)
    grounded.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    grounded.add_argument("--device", default=None)
    grounded.add_argument("--out", default="grounded", help="folder for image, masks and overlay")
    grounded.set_defaults(run=_cmd_ground)

    from groundiff.apps.demo import DemoConfig

    demo = _config_command(commands, "demo", DemoConfig, "run the whole method on the shipped mini world")
    demo.set_defaults(run=_cmd_demo)

    from groundiff.apps.results import ResultsConfig

    results = _config_command(
        commands, "results", ResultsConfig, "measure the paper's Tables 2, 3, 4 and 8 on the mini world over seeds"
    )
    results.set_defaults(run=_cmd_results)

    experiment = commands.add_parser(
        "experiment", help="run one of the paper's experiments by name ('list' lists them)"
    )
    experiment.add_argument("name", help="e.g. table2-improved, table4-loss-dice; 'list' to see all")
    experiment.add_argument("--train", default="data/train")
    experiment.add_argument("--val", default="data/val")
    experiment.add_argument("--test", nargs="+", default=["data/test-seen", "data/test-mixed", "data/test-unseen"])
    experiment.add_argument("--out", default="runs/experiments", help="run folders and results.csv")
    experiment.add_argument("--seed", type=int, default=0)
    experiment.add_argument("--epochs", type=int, default=None, help="override the experiment's epochs")
    experiment.add_argument("--model-config", default=None, help="extra TrainConfig fields (e.g. model sizes)")
    experiment.set_defaults(run=_cmd_experiment)
    return parser


# What a stopped command leaves, and how to go on (every command writes its results atomically).
_AFTER_STOP = {
    "generate": "every finished shard is kept; run the same command again to generate the rest",
    "train": "the last finished epoch is kept in --out/last; run the same command with --resume to continue",
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
    except (ValueError, OSError, RuntimeError, FloatingPointError) as error:
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

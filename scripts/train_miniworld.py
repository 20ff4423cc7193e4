"""Train the mini world's parts on CPU and publish the shipped weights (a developer tool, not part of the package).

    python scripts/train_miniworld.py <part> [--resume] [--minutes M] [--steps N]

Parts, in the order they depend on each other: vae, clip, unet (then its versions unet-ft, unet-v2, unet-crowd),
labeler, then publish (writes the weights into this checkout's src/groundiff/miniworld/weights/ unless
--weights-dir says otherwise). See `groundiff.miniworld.training` for what each part trains. The shipped
grounding checkpoint is trained by `groundiff train` (recipe: src/groundiff/configs/models/miniworld-grounding.yaml)
and published with `publish --parts grounding --grounding-checkpoint <run>/best`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from groundiff.miniworld.training import common
from groundiff.miniworld.training.clip import train_clip
from groundiff.miniworld.training.labeler import train_labeler
from groundiff.miniworld.training.publish import publish
from groundiff.miniworld.training.unet import train_unet
from groundiff.miniworld.training.vae import train_vae

# This checkout's weights (the tool trains and publishes for the repository, never into an installed package).
CHECKOUT_MINIWORLD = Path(__file__).resolve().parents[1] / "src" / "groundiff" / "miniworld"


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python scripts/train_miniworld.py", description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=common.PARTS)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/miniworld"))
    parser.add_argument("--steps", type=int, default=None, help="total optimizer steps (default per part)")
    parser.add_argument("--minutes", type=float, default=None, help="stop this invocation after M minutes")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the part's checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 when the machine is shared)")
    parser.add_argument("--checkpoint-minutes", type=float, default=4.0)
    parser.add_argument(
        "--miniworld-dir",
        type=Path,
        default=CHECKOUT_MINIWORLD,
        help="folder holding weights/ and checkpoints/ (default: this checkout's src/groundiff/miniworld)",
    )
    parser.add_argument(
        "--weights-dir", type=Path, default=None, help="publish: target (default: <miniworld-dir>/weights)"
    )
    parser.add_argument("--parts", default="vae,clip,unet,labeler", help="publish: comma-separated parts")
    parser.add_argument(
        "--grounding-checkpoint", type=Path, default=None, help="publish grounding: a `groundiff train` run's best/"
    )
    parser.add_argument("--pipeline-dir", type=Path, default=None, help="unet: VAE and text encoder (default: shipped)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    config = common.TrainConfig(
        part=args.part,
        run_dir=args.run_dir,
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        resume=args.resume,
        seed=args.seed,
        threads=args.threads,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    weights = args.weights_dir or args.miniworld_dir / "weights"
    checkpoints = args.miniworld_dir / "checkpoints"
    if config.part == "publish":
        publish(config, args.parts.split(","), weights, checkpoints, args.grounding_checkpoint)
    elif config.part in common.UNET_PARTS:
        train_unet(config, weights, checkpoints, args.pipeline_dir or weights / "pipeline")
    else:
        {"vae": train_vae, "clip": train_clip, "labeler": train_labeler}[config.part](config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""docs/model_versions.png: the same prompts drawn by each mini-world U-Net version (the paper's Figure 6).

    python scripts/draw_versions.py --work <the folder of scripts/measure_versions.py>

Row per model, column per test-set index: sample i of every model's test set starts from the same prompt
and seed; when the labeler discards an attempt, the retry draws another seed and pair, so a column shows
another prompt where a model failed the first.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from groundiff.data.dataset import GroundingDataset
from groundiff.visualize import plt, save_figure

REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--models", default="miniworld,miniworld-ft,miniworld-v2")
    parser.add_argument("--set", default="test-mixed")
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/model_versions.png")
    args = parser.parse_args()
    models = args.models.split(",")
    figure, axes = plt.subplots(len(models), args.columns, figsize=(1.9 * args.columns, 2.1 * len(models)))
    for row, model in enumerate(models):
        records = GroundingDataset([args.work / model / args.set], features=False)
        by_index = {records[i].meta["index"]: records[i] for i in range(len(records))}
        for column in range(args.columns):
            axis = axes[row, column]
            axis.imshow(by_index[column].image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(textwrap.fill(" and ".join(by_index[column].classes), 26), fontsize=7)
        axes[row, 0].set_ylabel(model, fontsize=9)
    save_figure(figure, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

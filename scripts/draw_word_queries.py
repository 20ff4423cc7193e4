"""docs/word_queries.png: the first renders of the unseen truth test set with an absent unseen class that
shares a word with one of their objects, each asked for its objects and that class, answered by the
mean-query recipe and by the words-alone queries (docs/RESULTS.md, "Absent objects").

    python scripts/draw_word_queries.py --bench <fresh bench> --mean <checkpoint> --words <checkpoint>
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from draw_queries import REPOSITORY, Grounder, labelled, panel
from groundiff.data.batching import shares_word
from groundiff.data.records import SampleRecord
from groundiff.data.sets import open_set
from groundiff.miniworld.vocabulary import UNSEEN_CLASSES
from groundiff.visualize import plt, save_figure

RENDERS = 3


def sharing_absent_class(record: SampleRecord) -> str | None:
    """The first unseen class absent from `record` that shares a word with one of its objects, if any."""
    names = (name for name in UNSEEN_CLASSES if name not in record.classes and shares_word(name, record.classes))
    return next(names, None)


def draw(mean: Grounder, words: Grounder, records: list[SampleRecord], out: Path) -> Path:
    figure, axes = plt.subplots(len(records), 2, figsize=(6, 3 * len(records)), squeeze=False)
    for row, record in enumerate(records):
        queries = [*record.classes, str(sharing_absent_class(record))]
        for axis, (name, grounder) in zip(
            axes[row], (("mean-query recipe", mean), ("words alone", words)), strict=True
        ):
            masks, found = grounder.answer(record, queries)
            panel(axis, record.image, masks, labelled(queries, found), f"{name}\nasked also for {queries[-1]!r}")
    return save_figure(figure, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="holds truth-test-unseen")
    parser.add_argument("--mean", type=Path, required=True, help="a mean-query checkpoint")
    parser.add_argument("--words", type=Path, required=True, help="a checkpoint with class_queries: words")
    args = parser.parse_args()
    torch.set_num_threads(1)
    unseen = open_set(str(args.bench / "truth-test-unseen"))
    sharing = (record for record in map(unseen.__getitem__, range(len(unseen))) if sharing_absent_class(record))
    records = list(itertools.islice(sharing, RENDERS))
    print(draw(Grounder(args.mean), Grounder(args.words), records, REPOSITORY / "docs/word_queries.png"))


if __name__ == "__main__":
    main()

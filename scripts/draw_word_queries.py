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

from draw_queries import REPOSITORY, Grounder, draw_asked, sharing_absent_class
from groundiff.data.records import SampleRecord
from groundiff.data.sets import open_set
from groundiff.miniworld.vocabulary import UNSEEN_CLASSES

RENDERS = 3


def draw(mean: Grounder, words: Grounder, asked: list[tuple[SampleRecord, str]], out: Path) -> Path:
    """One row per (render, absent class): the mean-query recipe's answers and words alone's."""
    return draw_asked((("mean-query recipe", mean), ("words alone", words)), asked, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="holds truth-test-unseen")
    parser.add_argument("--mean", type=Path, required=True, help="a mean-query checkpoint")
    parser.add_argument("--words", type=Path, required=True, help="a checkpoint with class_queries: words")
    args = parser.parse_args()
    torch.set_num_threads(1)
    unseen = open_set(str(args.bench / "truth-test-unseen"))
    records = map(unseen.__getitem__, range(len(unseen)))
    pairs = ((record, sharing_absent_class(record, UNSEEN_CLASSES)) for record in records)
    asked = list(itertools.islice(((record, absent) for record, absent in pairs if absent), RENDERS))
    print(draw(Grounder(args.mean), Grounder(args.words), asked, REPOSITORY / "docs/word_queries.png"))


if __name__ == "__main__":
    main()

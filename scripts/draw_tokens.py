"""docs/token_queries.png: how a model with token queries (`class_queries: tokens`) finds a class or turns
it away: each token of the name paints its own mask, and the class's mask is where all of them are.

    OMP_NUM_THREADS=1 python scripts/draw_tokens.py --bench <bench> --checkpoint <token-queries checkpoint>
    (`--out docs/token_word_targets.png` for the model trained with word targets)

The first two renders of the unseen-class truth set, each asked for its objects and for an absent class that
shares a word with one of them (an unseen one where there is one); one row for that present object and one
for the absent class.
The renders are the first that fit, not picked for a good answer; docs/RESULTS.md gives the rates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from draw_queries import REPOSITORY, Grounder, panel, sharing_absent_class
from groundiff.data.batching import collate, shares_word
from groundiff.data.records import SampleRecord
from groundiff.data.sets import open_set
from groundiff.miniworld.vocabulary import SEEN_CLASSES, UNSEEN_CLASSES
from groundiff.visualize import plt, save_figure


def token_masks(grounder: Grounder, record: SampleRecord, queries: list[str]) -> tuple[list, list, list]:
    """Per query: its class mask (empty when not found), whether it was found, and its tokens' masks."""
    asked = SampleRecord(record.index, record.image, record.features, [], {**record.meta, "classes": queries})
    batch = collate([asked], grounder.embedder)
    with torch.no_grad():
        output = grounder.model.answer(batch.features, batch.embeddings, ~batch.valid)
    if output.token_logits is None:
        raise SystemExit("The checkpoint was trained with class_queries 'mean'; give one with token queries.")
    found = grounder.model.found(output, batch.valid)[0].tolist()
    size = record.image.shape[:2]
    classes = F.interpolate(output.logits.float(), size=size, mode="bilinear")[0].sigmoid() > 0.5  # (N, H, W)
    per_token = output.token_logits[0].float()  # (N, K, h, w)
    tokens = F.interpolate(per_token, size=size, mode="bilinear").sigmoid() > 0.5  # (N, K, H, W)
    masks = [classes[i].numpy() & found[i] for i in range(len(queries))]
    return masks, found, [tokens[i].numpy() for i in range(len(queries))]


def draw(grounder: Grounder, records: list[SampleRecord], out: Path) -> Path:
    rows: list[tuple[SampleRecord, str, np.ndarray, bool, np.ndarray, list[str]]] = []
    for record in records:
        candidates = (*UNSEEN_CLASSES, *SEEN_CLASSES)
        absent = sharing_absent_class(record, candidates)
        assert absent is not None, f"render {record.index} has no absent class sharing a word"
        sharing = next(name for name in record.classes if shares_word(absent, [name]))
        queries = [*record.classes, absent]
        masks, found, tokens = token_masks(grounder, record, queries)
        for name in (sharing, absent):
            index = queries.index(name)
            pieces = [piece.removesuffix("</w>") for piece in grounder.embedder.tokenizer.tokenize(name)]
            rows.append((record, name, masks[index], found[index], tokens[index][: len(pieces)], pieces))
    columns = 1 + max(len(row[-1]) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(3 * columns, 3 * len(rows)), squeeze=False)
    for axis_row, (record, name, mask, found, token_maps, pieces) in zip(axes, rows, strict=True):
        label = name if found else f"{name}: not found"
        present = "present" if name in record.classes else "absent"
        panel(axis_row[0], record.image, [mask], [label], f"asked for {name!r} ({present})\nclass mask")
        for axis, token_map, piece in zip(axis_row[1:], token_maps, pieces, strict=False):
            panel(axis, record.image, [token_map], [piece], f"token {piece!r}")
        for axis in axis_row[1 + len(pieces) :]:
            axis.set_axis_off()
    return save_figure(figure, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="a bench folder with truth-test-unseen")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint with token queries")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs/token_queries.png", help="the picture")
    args = parser.parse_args()
    torch.set_num_threads(1)
    unseen = open_set(str(args.bench / "truth-test-unseen"))
    fitting = [unseen[i] for i in range(len(unseen)) if len(unseen[i].classes) >= 2][:2]
    draw(Grounder(args.checkpoint), fitting, args.out)


if __name__ == "__main__":
    main()

"""Hard negative mining (`training.mining`): each negative query becomes the absent class the model paints most."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from groundiff.data.batching import GroundingBatch, stack_embeddings
from groundiff.training.config import TrainConfig
from groundiff.training.loop import train
from groundiff.training.mining import mine_negatives
from test_absent import small_sets, tiny_run  # noqa: F401  (fixture)
from test_model import TEXT_WIDTH, TINY_CONFIG, TINY_SHAPES, features, tiny_model

POOL = ("red disc", "red ring", "blue disc", "blue ring", "green cross", "yellow hourglass")


class ContextEmbedder:
    """A stand-in text encoder whose class vectors depend on the other classes asked (as with subtraction),
    one vector per name (`tokens=False`) or one per word (`tokens=True`, a different count per name)."""

    def __init__(self, tokens: bool) -> None:
        generator = torch.Generator().manual_seed(5)
        self.table = {name: torch.randn(TEXT_WIDTH, generator=generator) for name in POOL}
        self.tokens = tokens

    def __call__(self, classes):
        base = torch.stack([self.table[name] for name in classes])  # (n, D)
        others = (base.sum(dim=0, keepdim=True) - base) / max(len(classes) - 1, 1)
        vectors = base - others
        if not self.tokens:
            return vectors
        longest = max(len(name.split()) for name in classes)
        rows = torch.zeros(len(classes), longest, TEXT_WIDTH)
        for n, name in enumerate(classes):
            for k in range(len(name.split())):
                rows[n, k] = vectors[n] * (k + 1)
        return rows


def batch_of(embedder: ContextEmbedder, classes: list[list[str]], present: list[list[bool]]) -> GroundingBatch:
    count = max(len(names) for names in classes)
    valid = torch.tensor([[s < len(names) for s in range(count)] for names in classes])
    flags = torch.tensor([flags + [False] * (count - len(flags)) for flags in present])
    return GroundingBatch(
        features=features(TINY_SHAPES, len(classes)),
        embeddings=stack_embeddings([embedder(names) for names in classes]),
        valid=valid,
        present=flags,
        targets=torch.zeros(len(classes), count, 32, 32),
        classes=[list(names) for names in classes],
        indices=list(range(len(classes))),
    )


@pytest.mark.parametrize("queries", ["mean", "tokens"])
def test_each_negative_becomes_the_absent_class_painted_most_in_its_own_context(queries):
    model = tiny_model(dataclasses.replace(TINY_CONFIG, class_queries=queries)).train()
    embedder = ContextEmbedder(tokens=queries == "tokens")
    classes = [["red disc", "green cross", "blue ring"], ["yellow hourglass", "red ring"], ["blue disc", "red disc"]]
    present = [[True, False, True], [True, True], [False, True]]  # image 1 has no negative
    batch = batch_of(embedder, classes, present)

    mined = mine_negatives(model, batch, embedder, POOL)

    assert model.training  # returned to the mode it was in
    for b, slot in ((0, 1), (2, 0)):
        names = classes[b]
        candidates = [name for name in POOL if name not in names or name == names[slot]]
        peaks = []
        for name in candidates:  # brute force: one candidate, one image, one forward at a time
            context = [*names[:slot], name, *names[slot + 1 :]]
            with torch.no_grad():
                model.eval()
                one = {key: value[b : b + 1] for key, value in batch.features.items()}
                _, logits, _ = model.class_logits(*model.encode(one), embedder(context)[None])
                model.train()
            peaks.append(float(logits[0, slot].max()))
        chosen = candidates[max(range(len(peaks)), key=peaks.__getitem__)]
        assert mined.classes[b] == [*names[:slot], chosen, *names[slot + 1 :]]
        assert chosen not in [names[s] for s in range(len(names)) if present[b][s]]
    assert mined.classes[1] == classes[1]
    # The renamed images are embedded anew, in their new context; nothing else moves.
    assert torch.equal(mined.embeddings, stack_embeddings([embedder(names) for names in mined.classes]))
    for name in ("valid", "present", "targets"):
        assert torch.equal(getattr(mined, name), getattr(batch, name))
    assert batch.classes == classes  # the input batch is not changed in place


def test_a_batch_without_negatives_is_returned_as_it_is():
    embedder = ContextEmbedder(tokens=False)
    batch = batch_of(embedder, [["red disc", "blue ring"]], [[True, True]])
    assert mine_negatives(tiny_model(), batch, embedder, POOL) is batch


@pytest.mark.parametrize(
    "clash",
    [{"negative_fraction": 0.0}, {"hard_negatives": 1.0}, {"negatives_per_sample": 2}],
)
def test_mining_refuses_settings_it_would_silently_override(clash):
    settings = {"negative_fraction": 0.5, "mine_negatives": True, **clash}
    with pytest.raises(ValueError, match=f"mine_negatives does not combine with {next(iter(clash))}="):
        TrainConfig(**settings)


def test_a_run_with_mined_negatives_trains_and_differs_from_drawn_ones(small_sets, tmp_path):  # noqa: F811
    mined = train(tiny_run(small_sets, tmp_path / "mined", mine_negatives=True))
    drawn = train(tiny_run(small_sets, tmp_path / "drawn"))
    assert mined.history[0]["train_loss"] != drawn.history[0]["train_loss"]

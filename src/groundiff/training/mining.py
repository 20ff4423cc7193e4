"""Hard negative mining: each negative query of a training batch names the absent class that the model
being trained paints most strongly in that image, instead of one drawn at random or by shared words.

Why: a model that tells most absent classes apart still paints a few, and which ones is a matter of
what it has learned (on the mini world, rings and hourglasses of one colour), not of which words the
names share; a draw among word-sharing names spends most negatives on pairs it already answers. The
model, asked every candidate in the image's own context, names its current worst one.

Legend for shape comments: B images, N queries, M candidate query sets, C channels, h×w mask-feature side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from groundiff.data.batching import ClassEmbedder, GroundingBatch, stack_embeddings
from groundiff.model import GroundingModel


@torch.no_grad()
def mine_negatives(
    model: GroundingModel, batch: GroundingBatch, embedder: ClassEmbedder, pool: Sequence[str]
) -> GroundingBatch:
    """`batch` with each negative query (a valid slot that is not present) renamed to the class of `pool`,
    absent from its image, whose mask the model paints with the highest peak logit when asked it in that
    slot beside the image's other queries. Targets, `present` and `valid` are unchanged (a negative's
    target is an empty mask whatever its name); embeddings are recomputed for the renamed images (with
    subtraction, a class's embedding depends on the others asked with it). Images without a negative,
    or whose pool has no other absent class, are left as they are.

    The model answers in eval mode (no dropout) and is returned to the mode it was in.
    """
    if batch.word_targets is not None:
        raise ValueError("Mined negatives change the names after word targets were built; train without word_loss.")
    contexts: list[list[str]] = []  # every candidate query set, image by image
    owners: list[tuple[int, int, list[str]]] = []  # (image, negative slot, its candidates)
    for b, names in enumerate(batch.classes):
        slots = [s for s in range(len(names)) if batch.valid[b, s] and not batch.present[b, s]]
        if len(slots) != 1:
            continue  # no negative (or several: mining picks one per image, `TrainConfig` refuses more)
        slot = slots[0]
        candidates = [name for name in pool if name not in names or name == names[slot]]
        if len(candidates) < 2:
            continue
        owners.append((b, slot, candidates))
        contexts += [[*names[:slot], name, *names[slot + 1 :]] for name in candidates]
    if not owners:
        return batch
    training = model.training
    model.eval()
    try:
        peaks = _candidate_peaks(model, batch, embedder, contexts, owners)
    finally:
        model.train(training)
    classes = [list(names) for names in batch.classes]
    start = 0  # the candidates' peaks lie image after image, in `owners` order
    for b, slot, candidates in owners:
        classes[b][slot] = candidates[int(peaks[start : start + len(candidates)].argmax())]
        start += len(candidates)
    # Stacked anew: a mined name may have more tokens than the batch was padded to.
    embeddings = stack_embeddings([embedder(names) for names in classes]).to(batch.embeddings.device)
    return dataclasses.replace(batch, embeddings=embeddings, classes=classes)


def _candidate_peaks(
    model: GroundingModel,
    batch: GroundingBatch,
    embedder: ClassEmbedder,
    contexts: list[list[str]],
    owners: list[tuple[int, int, list[str]]],
) -> torch.Tensor:
    """(M,) float: the peak logit of each candidate's class mask, asked in its own query set; the visual
    encoder runs once per image and the decoder once per candidate set."""
    device = batch.embeddings.device
    mask_features, tokens = model.encode(batch.features)  # (B, C, h, w), (B, T, W)
    images = torch.tensor([b for b, _, candidates in owners for _ in candidates], device=device)  # (M,)
    slots = torch.tensor([slot for _, slot, candidates in owners for _ in candidates], device=device)
    embeddings = stack_embeddings([embedder(names) for names in contexts]).to(device)  # (M, N, ...)
    lengths = torch.tensor([len(names) for names in contexts], device=device)
    padding = torch.arange(embeddings.shape[1], device=device)[None, :] >= lengths[:, None]  # (M, N)
    _, logits, _ = model.class_logits(mask_features[images], tokens[images], embeddings, padding)  # (M, N, h, w)
    return logits[torch.arange(len(contexts), device=device), slots].flatten(1).amax(dim=1).float()

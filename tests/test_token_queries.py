"""Token queries (`GroundingModelConfig.class_queries="tokens"`): each name token is a decoder query and
a class's mask is where all of its tokens' masks are; the embedder keeps the tokens apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from groundiff.data.batching import ClassEmbedder, NegativeQueries, collate
from groundiff.data.records import SampleRecord
from groundiff.model import GroundingModelConfig
from groundiff.text import (
    PromptTemplate,
    class_embeddings,
    class_token_embeddings,
    name_token_words,
    subtract_other_classes,
    word_token_embeddings,
)
from groundiff.training.config import TrainConfig
from groundiff.training.losses import word_loss
from test_absent import record
from test_model import TEXT_WIDTH, TINY_CONFIG, TINY_SHAPES, embeddings, features, tiny_model
from test_text import PositionEncoder

TOKENS_CONFIG = dataclasses.replace(TINY_CONFIG, class_queries="tokens")


def test_class_tokens_are_each_names_tokens_zero_padded_and_average_to_the_class_embedding(tokenizer):
    names = ["pottedplant", "dog"]  # pot|ted|plant and dog
    tokens = class_token_embeddings(PositionEncoder(), tokenizer, PromptTemplate.named("x_and_y"), names)
    assert tokens.shape == (2, 3, 2)
    assert tokens[1, 1:].abs().sum() == 0 and tokens[1, 0, 0] == 5.0  # "dog" at position 5, then padding
    means = class_embeddings(PositionEncoder(), tokenizer, "pottedplant and dog", names)
    torch.testing.assert_close(tokens[0].mean(dim=0), means[0])
    one_slot = class_token_embeddings(PositionEncoder(), tokenizer, PromptTemplate.named("photo_x"), names)
    assert one_slot[:, 0, 0].tolist() == [4.0, 4.0]  # each name alone after "a photograph of"


class TokenStub:
    """A text encoder stub with a width, as ClassEmbedder reads it."""

    config = type("Config", (), {"hidden_size": 2})()
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.encoder = PositionEncoder()

    def eval(self):
        return self

    def requires_grad_(self, flag: bool):
        return self

    def __call__(self, ids):
        return self.encoder(ids)


def test_the_embedder_subtracts_the_other_classes_from_every_token_and_keeps_padding_zero(tokenizer):
    names = ["pottedplant", "dog", "sofa"]
    plain = ClassEmbedder(TokenStub(), tokenizer, "x_and_y", tokens=True)(names)
    subtracted = ClassEmbedder(TokenStub(), tokenizer, "x_and_y", tokens=True, subtract_others=True)(names)
    valid = plain.abs().amax(dim=2) > 0  # (N, K)
    assert valid.sum(dim=1).tolist() == [3, 1, 1]
    assert subtracted[~valid].abs().sum() == 0
    means = lambda t: t.sum(dim=1) / valid.sum(dim=1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(means(subtracted), subtract_other_classes(means(plain)))
    with pytest.raises(ValueError, match="end-of-text"):
        ClassEmbedder(TokenStub(), tokenizer, "photo_x", tokens=True, end_of_text=True)


def test_collate_pads_class_tokens_to_the_longest_name_of_the_batch(tokenizer):
    embedder = ClassEmbedder(TokenStub(), tokenizer, "x_and_y", tokens=True)
    batch = collate([record(0, ["dog", "sofa"]), record(1, ["pottedplant"])], embedder)
    assert batch.embeddings.shape == (2, 2, 3, 2)
    assert torch.equal(batch.embeddings[1, 0], embedder(["pottedplant"])[0])
    assert batch.embeddings[0, :, 1:].abs().sum() == 0 and batch.embeddings[1, 1].abs().sum() == 0


def test_a_class_mask_is_the_least_of_its_tokens_logits():
    # Without positional encodings the decoder treats its queries as a set: a class of tokens (a, b) sees
    # the same queries as two one-token classes (a) and (b), so its logit is the lesser of theirs (taken
    # at the mask features' side, 16 here, before upsampling, which does not commute with a minimum).
    model = tiny_model(dataclasses.replace(TOKENS_CONFIG, mask_size=16))
    maps = features(TINY_SHAPES, 1)
    a, b = embeddings(1, 2)[0]
    with torch.no_grad():
        output = model.answer(maps, torch.stack([a, b])[None, None])
        together = output.logits  # (1, 1, S, S)
        apart = model.answer(maps, torch.stack([a, b])[None, :, None]).logits  # (1, 2, S, S)
    torch.testing.assert_close(together[0, 0], apart[0].amin(dim=0), atol=1e-5, rtol=1e-5)
    assert output.token_logits is not None and output.token_logits.shape == (1, 1, 2, 16, 16)
    torch.testing.assert_close(output.token_logits[0, 0], apart[0], atol=1e-5, rtol=1e-5)  # each token's own mask
    assert not torch.allclose(apart[0, 0], apart[0, 1])  # the minimum takes from both


def test_padded_tokens_and_padded_classes_change_nothing():
    model = tiny_model(dataclasses.replace(TOKENS_CONFIG, presence_head=True))
    maps = features(TINY_SHAPES, 1)
    tokens = torch.randn(1, 2, 2, TEXT_WIDTH, generator=torch.Generator().manual_seed(5))
    padded = torch.zeros(1, 3, 4, TEXT_WIDTH)
    padded[:, :2, :2] = tokens
    with torch.no_grad():
        short = model.answer(maps, tokens)
        long = model.answer(maps, padded, torch.tensor([[False, False, True]]))
    torch.testing.assert_close(long.logits[:, :2], short.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(long.presence[:, :2], short.presence, atol=1e-5, rtol=1e-5)


def test_a_model_names_the_embeddings_it_takes():
    maps = features(TINY_SHAPES, 1)
    with pytest.raises(ValueError, match=r"class_queries='tokens'.*\(B, N, K, D\)"):
        tiny_model(TOKENS_CONFIG).answer(maps, embeddings(1, 2))
    with pytest.raises(ValueError, match=r"class_queries='mean'.*\(B, N, D\)"):
        tiny_model().answer(maps, embeddings(1, 2)[:, :, None])
    with pytest.raises(ValueError, match="class_queries"):
        GroundingModelConfig(class_queries="letters")


def test_each_name_token_belongs_to_a_word_of_the_name(tokenizer):
    assert name_token_words(tokenizer, "Red pottedplant") == ["red"] + ["pottedplant"] * 3  # pot|ted|plant
    names = ["red pottedplant", "dog"]
    tokens = class_token_embeddings(PositionEncoder(), tokenizer, PromptTemplate.named("x_and_y"), names)
    words = ClassEmbedder(TokenStub(), tokenizer, "x_and_y", tokens=True).token_words(names)
    assert [len(w) for w in words] == (tokens.abs().amax(dim=2) > 0).sum(dim=1).tolist()  # one word per token slot


def coloured_record(index: int, classes: list[str]) -> SampleRecord:
    """A record whose objects are disjoint columns: object i fills column i of a 4 × 4 image."""
    masks = [np.zeros((4, 4), dtype=bool) for _ in classes]
    for i, mask in enumerate(masks):
        mask[:, i] = True
    maps = {name: torch.zeros(shape) for name, shape in TINY_SHAPES.items()}
    return SampleRecord(index, np.zeros((4, 4, 3), np.uint8), maps, masks, {"classes": classes, "prompt": ""})


def test_a_token_s_word_target_is_every_object_whose_name_has_its_word(tokenizer):
    embedder = ClassEmbedder(TokenStub(), tokenizer, "x_and_y", tokens=True)
    present = ["red disc", "red pottedplant"]
    negatives = NegativeQueries(("blue disc",), fraction=1.0, seed=0)
    batch = collate([coloured_record(0, present)], embedder, negatives=negatives, word_targets=True)
    assert batch.word_targets is not None and batch.word_targets.shape == (1, 3, 4, 4, 4)
    column = {name: torch.from_numpy(coloured_record(0, present).masks[i]).float() for i, name in enumerate(present)}
    both_red = torch.maximum(column["red disc"], column["red pottedplant"])
    for slot, name in enumerate(batch.classes[0]):
        expected = {
            "red disc": [both_red, column["red disc"], None, None],
            "red pottedplant": [both_red] + [column["red pottedplant"]] * 3,
            "blue disc": [torch.zeros(4, 4), column["red disc"], None, None],  # absent: its "disc" is still the disc
        }[name]
        for k, target in enumerate(expected):
            assert torch.equal(batch.word_targets[0, slot, k], torch.zeros(4, 4) if target is None else target)
    assert collate([coloured_record(0, present)], embedder).word_targets is None
    with pytest.raises(ValueError, match="tokens=True"):
        collate([coloured_record(0, present)], ClassEmbedder(TokenStub(), tokenizer, "x_and_y"), word_targets=True)


def test_the_word_loss_reads_real_tokens_only_and_learns_an_empty_word_with_bce_alone():
    targets = torch.zeros(1, 2, 2, 4, 4)
    targets[0, 0, 0, :, 0] = 1  # token (0, 0) names an object in column 0; token (0, 1) names nothing
    token_valid = torch.tensor([[[True, True], [False, False]]])  # the second class is padding
    right = 20 * (2 * targets - 1)  # confident and right everywhere
    assert float(word_loss("bce+logcosh-dice", right, targets, token_valid)) < 1e-3
    garbage = right.clone()
    garbage[0, 1] = torch.randn(2, 4, 4)
    assert torch.equal(
        word_loss("bce+logcosh-dice", garbage, targets, token_valid),
        word_loss("bce+logcosh-dice", right, targets, token_valid),
    )
    wrong_empty = right.clone()
    wrong_empty[0, 0, 1] = 0.0  # the empty word at probability 0.5: BCE log 2, no Dice term
    expected = (torch.log(torch.tensor(2.0)) + word_loss("bce+logcosh-dice", right, targets, token_valid) * 2) / 2
    torch.testing.assert_close(
        word_loss("bce+logcosh-dice", wrong_empty, targets, token_valid), expected, atol=1e-4, rtol=1e-4
    )
    with pytest.raises(ValueError, match="token_valid"):
        word_loss("bce", right[:, :1], targets, token_valid)


def test_word_loss_needs_token_queries():
    assert TrainConfig(word_loss=1.0, model={"class_queries": "tokens"}).word_loss == 1.0
    with pytest.raises(ValueError, match="class_queries: tokens"):
        TrainConfig(word_loss=1.0)
    with pytest.raises(ValueError, match="at least 0"):
        TrainConfig(word_loss=-1.0, model={"class_queries": "tokens"})


def test_words_alone_give_a_word_one_vector_in_every_name(tokenizer):
    tokens = word_token_embeddings(PositionEncoder(), tokenizer, ["red pottedplant", "blue pottedplant", "dog"])
    assert tokens.shape == (3, 4, 2)
    # Each word is encoded alone: its tokens start at position 1, whatever came before it in the name.
    assert tokens[0, :, 0].tolist() == [1.0, 1.0, 2.0, 3.0] and tokens[2, 1:].abs().sum() == 0
    torch.testing.assert_close(tokens[0, 1:], tokens[1, 1:])  # "pottedplant" after "red" and after "blue"
    assert not torch.equal(tokens[0, 0], tokens[1, 0])
    # A shared cache encodes each word once and gives the same vectors; a cached word is read, not re-encoded.
    cache: dict[str, torch.Tensor] = {}
    torch.testing.assert_close(
        word_token_embeddings(PositionEncoder(), tokenizer, ["red pottedplant"], cache)[0], tokens[0]
    )
    assert set(cache) == {"red", "pottedplant"}
    cache["red"] = cache["red"] + 100
    again = word_token_embeddings(PositionEncoder(), tokenizer, ["red pottedplant", "dog"], cache)
    assert again[0, 0, 0] == tokens[0, 0, 0] + 100 and set(cache) == {"red", "pottedplant", "dog"}
    embedder = ClassEmbedder(TokenStub(), tokenizer, "x_and_y", tokens=True, words_alone=True)
    torch.testing.assert_close(embedder(["red pottedplant", "dog"])[0], tokens[0])
    with pytest.raises(ValueError, match="tokens=True"):
        ClassEmbedder(TokenStub(), tokenizer, "x_and_y", words_alone=True)


def test_a_checkpoint_with_word_queries_embeds_each_word_alone(tokenizer):
    assert GroundingModelConfig(class_queries="words").token_queries and not GroundingModelConfig().token_queries
    meta = type("Meta", (), {"template": "x_and_y", "end_of_text": False, "subtract_others": False})()
    meta.model_config = {"class_queries": "words"}
    embedder = ClassEmbedder.for_checkpoint(meta, TokenStub(), tokenizer)
    assert embedder.tokens and embedder.words_alone
    meta.model_config = {"class_queries": "tokens"}
    assert not ClassEmbedder.for_checkpoint(meta, TokenStub(), tokenizer).words_alone
    maps = features(TINY_SHAPES, 1)
    with torch.no_grad():
        logits = tiny_model(dataclasses.replace(TINY_CONFIG, class_queries="words")).answer(
            maps, embeddings(1, 2)[:, :, None]
        )
    assert logits.token_logits is not None and logits.logits.shape[:2] == (1, 2)
    assert TrainConfig(word_loss=1.0, model={"class_queries": "words"}).word_loss == 1.0

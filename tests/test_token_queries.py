"""Token queries (`GroundingModelConfig.class_queries="tokens"`): each name token is a decoder query and
a class's mask is where all of its tokens' masks are; the embedder keeps the tokens apart."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from groundiff.data.batching import ClassEmbedder, collate
from groundiff.model import GroundingModelConfig
from groundiff.text import PromptTemplate, class_embeddings, class_token_embeddings, subtract_other_classes
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
        GroundingModelConfig(class_queries="words")

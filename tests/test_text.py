"""Class-token embeddings: real CLIP BPE tokenization, token averaging, end-of-text, templates, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from groundiff.sd import tiny as testing
from groundiff.text import (
    PromptTemplate,
    class_embeddings,
    class_token_positions,
    end_of_text_embeddings,
    subtract_other_classes,
    template_class_embeddings,
)


class PositionEncoder(nn.Module):
    """Stub text encoder whose output at position t is (t, token id): averages are checkable by hand."""

    device = torch.device("cpu")

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor]:
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return (torch.stack([positions, input_ids], dim=-1).float(),)  # (B, T, 2)


def test_real_clip_vocabulary_splits_class_names(tokenizer):
    assert len(tokenizer) == 49408
    assert tokenizer("dog").input_ids == [49406, 1929, 49407]
    pieces = {name: tokenizer.tokenize(name) for name in ("pottedplant", "tvmonitor", "diningtable")}
    assert pieces == {
        "pottedplant": ["pot", "ted", "plant</w>"],
        "tvmonitor": ["tv", "monitor</w>"],
        "diningtable": ["din", "ing", "table</w>"],
    }


def test_positions_cover_every_token_of_multi_token_names(tokenizer):
    assert class_token_positions(tokenizer, "pottedplant and tvmonitor", ["pottedplant", "tvmonitor"]) == [
        [1, 2, 3],
        [5, 6],
    ]
    assert class_token_positions(tokenizer, "A Dog, and a Sofa.", ["sofa", "dog"]) == [[6], [2]]


def test_repeated_and_nested_names_take_distinct_occurrences(tokenizer):
    assert class_token_positions(tokenizer, "dog and dog", ["dog", "dog"]) == [[1], [3]]
    # "dog" must not claim the "dog" of "hot dog", whatever the order of the classes.
    prompt = "a photograph of a hot dog and a dog"
    assert class_token_positions(tokenizer, prompt, ["dog", "hot dog"]) == [[9], [5, 6]]
    assert class_token_positions(tokenizer, "a pottedplant and a plant", ["plant"]) == [[7]]


def test_class_embedding_is_the_mean_over_its_tokens(tokenizer):
    embeddings = class_embeddings(
        PositionEncoder(), tokenizer, "pottedplant and tvmonitor", ["pottedplant", "tvmonitor"]
    )
    pot, ted, plant, tv, monitor = 3547, 4841, 3912, 3197, 10198
    expected = torch.tensor([[2.0, (pot + ted + plant) / 3], [5.5, (tv + monitor) / 2]])
    torch.testing.assert_close(embeddings, expected)


def test_end_of_text_embedding_sits_after_the_last_token(tokenizer):
    embeddings = end_of_text_embeddings(
        PositionEncoder(), tokenizer, ["a photograph of dog", "a photograph of pottedplant"]
    )
    torch.testing.assert_close(embeddings, torch.tensor([[5.0, 49407.0], [7.0, 49407.0]]))


def test_templates_of_the_ablation_fill_any_number_of_classes():
    assert PromptTemplate.named("x_and_y").format(["cat", "dog"]) == ["cat and dog"]
    assert PromptTemplate.named("generation").format(["cat", "dog", "sofa"]) == [
        "a photograph of a cat and a dog and a sofa"
    ]
    assert PromptTemplate.named("generation").format(["cat"]) == ["a photograph of a cat"]
    assert PromptTemplate.named("photo_x").format(["cat", "dog"]) == ["a photograph of cat", "a photograph of dog"]
    assert PromptTemplate.named("x").format(["cat"]) == ["cat"]
    assert PromptTemplate.named("the {x} beside the {y}").format(["cat", "dog"]) == ["the cat beside the dog"]


def test_template_embeddings_for_pair_single_and_end_of_text_variants(tokenizer):
    encoder = PositionEncoder()
    pair = template_class_embeddings(encoder, tokenizer, PromptTemplate.named("x_and_y"), ["dog", "sofa"])
    torch.testing.assert_close(pair[:, 0], torch.tensor([1.0, 3.0]))
    single = template_class_embeddings(encoder, tokenizer, PromptTemplate.named("photo_x"), ["dog", "sofa"])
    torch.testing.assert_close(single[:, 0], torch.tensor([4.0, 4.0]))
    eot = template_class_embeddings(encoder, tokenizer, PromptTemplate.named("photo_x"), ["dog"], end_of_text=True)
    torch.testing.assert_close(eot, torch.tensor([[5.0, 49407.0]]))
    with pytest.raises(ValueError, match="one-slot template"):
        template_class_embeddings(encoder, tokenizer, PromptTemplate.named("x_and_y"), ["dog"], end_of_text=True)


def test_works_with_a_real_tiny_clip_text_encoder(tokenizer):
    encoder = testing.tiny_components("sd2")["text_encoder"]
    embeddings = class_embeddings(encoder, tokenizer, "diningtable and dog", ["diningtable", "dog"])
    assert embeddings.shape == (2, 48)
    hidden = encoder(tokenizer(["diningtable and dog"], return_tensors="pt").input_ids)[0][0]
    torch.testing.assert_close(embeddings[0], hidden[1:4].mean(0))


@pytest.mark.parametrize(
    ("prompt", "names", "message"),
    [
        ("dog and sofa", ["cat"], "Class 'cat' does not occur in the prompt 'dog and sofa'"),
        ("hotdog and sofa", ["dog"], "Class 'dog' does not occur"),
        ("dog and sofa", ["dog", "dog"], "Class 'dog' occurs fewer times than it is listed"),
        ("dog and sofa", [" "], "Empty class name given for prompt 'dog and sofa'"),
        ("dog " * 80, ["dog"], "82 tokens long, over the text encoder's limit of 77"),
    ],
)
def test_bad_input_names_the_class_and_the_prompt(tokenizer, prompt, names, message):
    with pytest.raises(ValueError, match=message):
        class_token_positions(tokenizer, prompt, names)


def test_bad_templates_are_refused():
    for text in ("no slots", "{y} and {x}", "{x} and {x}"):
        with pytest.raises(ValueError, match="template"):
            PromptTemplate(text)
    with pytest.raises(ValueError, match="No classes"):
        PromptTemplate.named("x_and_y").format([])


def test_subtracting_the_other_classes_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # Row 0 loses the mean of rows 1 and 2, (0.5, 1); row 2 loses the mean of rows 0 and 1, (0.5, 0.5).
    expected = torch.tensor([[0.5, -1.0], [-1.0, 0.5], [0.5, 0.5]])
    torch.testing.assert_close(subtract_other_classes(embeddings), expected)
    torch.testing.assert_close(subtract_other_classes(embeddings[:1]), embeddings[:1])  # one class: unchanged


def test_the_embedder_subtracts_only_when_asked(tokenizer):
    from groundiff.data.batching import ClassEmbedder

    encoder = testing.tiny_components("sd1")["text_encoder"]
    plain = ClassEmbedder(encoder, tokenizer, "x_and_y")(["dog", "sofa"])
    subtracted = ClassEmbedder(encoder, tokenizer, "x_and_y", subtract_others=True)(["dog", "sofa"])
    torch.testing.assert_close(subtracted, torch.stack([plain[0] - plain[1], plain[1] - plain[0]]))


def test_checkpoints_without_the_switch_load_as_not_subtracting():
    from groundiff.model.checkpoint import CheckpointMeta

    fields = dict(model_config={}, feature_shapes={}, text_width=8, text_model="m", set_config={}, template="x_and_y")
    assert CheckpointMeta.from_json({**fields, "end_of_text": False}, "old.json").subtract_others is False

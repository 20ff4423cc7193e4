"""The frozen CLIP text side: prompt templates and one embedding per class named in a prompt.

The improved method encodes a grounding prompt such as "pottedplant and tvmonitor" once and takes,
for each class, the mean of the encoder's output vectors over all BPE tokens of that class name's
occurrence in the prompt ("pottedplant" → pot|ted|plant). The Li et al. baseline instead takes the
end-of-text token of "a photograph of {x}", one prompt per class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

# The ablation's prompt templates (paper Table 3) and the generation template.
PROMPT_TEMPLATES: dict[str, str] = {
    "x_and_y": "{x} and {y}",
    "photo_x_and_y": "a photograph of {x} and {y}",
    "photo_x": "a photograph of {x}",
    "x": "{x}",
    "generation": "a photograph of a {x} and a {y}",
}


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with slots `{x}` and optionally `{y}`.

    A two-slot template generalizes to any number of classes by repeating its joiner (the text
    between `{x}` and `{y}`): "a photograph of a {x} and a {y}" with 3 classes reads
    "a photograph of a cat and a dog and a sofa". A one-slot template makes one prompt per class.
    """

    text: str

    def __post_init__(self) -> None:
        if self.text.count("{x}") != 1 or self.text.count("{y}") > 1:
            raise ValueError(
                f"Prompt template {self.text!r} must contain '{{x}}' once and '{{y}}' at most once, "
                f"e.g. {PROMPT_TEMPLATES['x_and_y']!r}."
            )
        if "{y}" in self.text and self.text.index("{y}") < self.text.index("{x}"):
            raise ValueError(f"Prompt template {self.text!r} must name '{{x}}' before '{{y}}'.")

    @classmethod
    def named(cls, name_or_text: str) -> PromptTemplate:
        """A template by ablation name (`x_and_y`, `photo_x`, …) or as literal text with `{x}`."""
        return cls(PROMPT_TEMPLATES.get(name_or_text, name_or_text))

    @property
    def per_class(self) -> bool:
        """True for one-slot templates, which encode each class in its own prompt."""
        return "{y}" not in self.text

    def format(self, classes: Sequence[str]) -> list[str]:
        """Prompts for `classes`: one prompt for a two-slot template, one per class otherwise."""
        if not classes:
            raise ValueError(f"No classes given to fill the prompt template {self.text!r}.")
        if self.per_class:
            return [self.text.replace("{x}", name) for name in classes]
        head, rest = self.text.split("{x}")
        joiner, tail = rest.split("{y}")
        return [head + joiner.join(classes) + tail]


# The `GroundingModelConfig.class_queries` kinds with one decoder query per name token: "tokens" takes the
# tokens' vectors in the grounding prompt, "words" encodes each word alone (`word_token_embeddings`).
TOKEN_QUERIES = ("tokens", "words")


def class_token_positions(tokenizer: Any, prompt: str, class_names: Sequence[str]) -> list[list[int]]:
    """Token positions (in the tokenized prompt, start token at 0) of each class name's occurrence.

    Names are matched as whole words, case-insensitively; a name listed twice takes its first and
    second occurrence; longer names are placed first so that "dog" never claims the "dog" of "hot dog".

    Raises:
        ValueError: an empty name, a name that does not occur in the prompt, or a prompt longer
            than the tokenizer's limit; the message names the class and the prompt.
    """
    ids = tokenizer(prompt).input_ids
    if len(ids) > tokenizer.model_max_length:
        raise ValueError(
            f"Prompt {prompt!r} is {len(ids)} tokens long, over the text encoder's limit of "
            f"{tokenizer.model_max_length}; shorten the prompt or use fewer classes."
        )
    taken: list[tuple[int, int]] = []
    spans: dict[int, tuple[int, int]] = {}
    for index in sorted(range(len(class_names)), key=lambda i: -len(class_names[i])):
        spans[index] = _claim_span(prompt, class_names[index], taken)
        taken.append(spans[index])
    positions = []
    for index, name in enumerate(class_names):
        start, end = spans[index]
        first = len(tokenizer(prompt[:start].rstrip()).input_ids) - 1  # tokens before the name, after the start token
        count = len(tokenizer(prompt[start:end]).input_ids) - 2
        name_ids = ids[first : first + count]
        # CLIP's BPE works word by word, so the name's own tokens reappear unchanged in the prompt.
        assert name_ids == tokenizer(prompt[start:end]).input_ids[1:-1], (name, prompt)
        positions.append(list(range(first, first + count)))
    return positions


def _claim_span(prompt: str, name: str, taken: list[tuple[int, int]]) -> tuple[int, int]:
    """Character span of the first whole-word occurrence of `name` that overlaps no taken span."""
    if not name.strip():
        raise ValueError(f"Empty class name given for prompt {prompt!r}; every class needs a name.")
    pattern = re.compile(rf"(?<![^\W_]){re.escape(name.strip())}(?![^\W_])", re.IGNORECASE)
    for match in pattern.finditer(prompt):
        if all(match.end() <= s or match.start() >= e for s, e in taken):
            return match.span()
    occurrences = "does not occur" if pattern.search(prompt) is None else "occurs fewer times than it is listed"
    raise ValueError(
        f"Class {name!r} {occurrences} in the prompt {prompt!r}; every class must appear in the prompt "
        f"as a whole word (check the spelling or the prompt template)."
    )


@torch.no_grad()
def encode_prompts(text_encoder: Any, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Frozen CLIP output vectors of `prompts`, padded to the tokenizer's length as Stable Diffusion does.

    Returns:
        (P, T, D) tensor on the encoder's device and dtype, T = 77 for CLIP.
    """
    batch = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return text_encoder(batch.input_ids.to(text_encoder.device))[0]  # (P, T, D)


def class_token_vectors(
    text_encoder: Any, tokenizer: Any, prompt: str, class_names: Sequence[str]
) -> list[torch.Tensor]:
    """The output vectors of each class name's BPE tokens in `prompt`.

    Args:
        prompt: e.g. "pottedplant and tvmonitor".
        class_names: N names, each occurring in the prompt as a whole word.
    Returns:
        N tensors (K_i, D), K_i the tokens of name i, D the text encoder's width.
    """
    positions = class_token_positions(tokenizer, prompt, class_names)
    hidden = encode_prompts(text_encoder, tokenizer, [prompt])[0]  # (T, D)
    return [hidden[p] for p in positions]


def class_embeddings(text_encoder: Any, tokenizer: Any, prompt: str, class_names: Sequence[str]) -> torch.Tensor:
    """One embedding per class: the mean output vector over the BPE tokens of its name in `prompt`.

    Returns:
        (N, D) tensor; see `class_token_vectors` for the arguments.
    """
    return _means(class_token_vectors(text_encoder, tokenizer, prompt, class_names))


def _means(token_vectors: list[torch.Tensor]) -> torch.Tensor:
    """(N, D): the mean of each class's (K_i, D) token vectors."""
    return torch.stack([vectors.mean(dim=0) for vectors in token_vectors])


def end_of_text_embeddings(text_encoder: Any, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """The end-of-text token's output vector of each prompt (the Li et al. class embedding).

    Returns:
        (P, D) tensor.
    """
    for prompt in prompts:
        if len(tokenizer(prompt).input_ids) > tokenizer.model_max_length:
            raise ValueError(
                f"Prompt {prompt!r} is longer than the text encoder's limit of {tokenizer.model_max_length}."
            )
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length).input_ids
    eot = [row.index(tokenizer.eos_token_id) for row in ids]
    hidden = encode_prompts(text_encoder, tokenizer, prompts)  # (P, T, D)
    return hidden[torch.arange(len(prompts)), torch.tensor(eot)]  # (P, D)


def subtract_other_classes(embeddings: torch.Tensor) -> torch.Tensor:
    """Each class embedding minus the mean of the other classes' (the paper's proposed fix for the
    overlapping masks of CLIP's bag of words: "red ring" also carries "blue disc"'s words). One
    class is returned unchanged.

    Args:
        embeddings: (N, D) class embeddings of one image.
    Returns:
        (N, D): row i is e_i - mean_{j != i} e_j.
    """
    count = embeddings.shape[0]
    if count < 2:
        return embeddings
    others = (embeddings.sum(dim=0, keepdim=True) - embeddings) / (count - 1)
    return embeddings - others


def template_class_embeddings(
    text_encoder: Any,
    tokenizer: Any,
    template: PromptTemplate,
    class_names: Sequence[str],
    *,
    end_of_text: bool = False,
) -> torch.Tensor:
    """Class embeddings as a grounding model consumes them, for one image's classes.

    Two-slot templates ("{x} and {y}") encode all classes in one prompt; one-slot templates encode
    each class alone. `end_of_text=True` takes each prompt's end-of-text vector instead of the
    class tokens (the Li et al. baseline, which needs a one-slot template).

    Returns:
        (N, D) tensor.
    """
    prompts = template.format(class_names)
    if end_of_text:
        if not template.per_class:
            raise ValueError(
                f"The end-of-text embedding gives one vector per prompt; template {template.text!r} puts "
                f"all classes in one prompt. Use a one-slot template such as {PROMPT_TEMPLATES['photo_x']!r}."
            )
        return end_of_text_embeddings(text_encoder, tokenizer, prompts)
    return _means(template_token_vectors(text_encoder, tokenizer, template, class_names))


def template_token_vectors(
    text_encoder: Any, tokenizer: Any, template: PromptTemplate, class_names: Sequence[str]
) -> list[torch.Tensor]:
    """The output vectors of each class's name tokens under a grounding template (two-slot templates
    encode all classes in one prompt, one-slot templates each class alone): N tensors (K_i, D)."""
    prompts = template.format(class_names)
    if template.per_class:
        return [
            class_token_vectors(text_encoder, tokenizer, p, [c])[0] for p, c in zip(prompts, class_names, strict=True)
        ]
    return class_token_vectors(text_encoder, tokenizer, prompts[0], class_names)


def class_token_embeddings(
    text_encoder: Any, tokenizer: Any, template: PromptTemplate, class_names: Sequence[str]
) -> torch.Tensor:
    """Each class's name tokens as separate embeddings (a grounding model with token queries reads
    them): (N, K, D), K the longest name's token count, shorter names padded with zero vectors (a
    text encoder's output is never exactly zero)."""
    return torch.nn.utils.rnn.pad_sequence(
        template_token_vectors(text_encoder, tokenizer, template, class_names), batch_first=True
    )


def name_token_words(tokenizer: Any, name: str) -> list[str]:
    """The word (lower case) that each BPE token of class `name` belongs to, in token order:
    `"yellow hourglass"` → `["yellow", "hourglass", "hourglass"]` where "hourglass" is two tokens. CLIP's
    BPE works word by word, so a name's tokens are its words' tokens one after the other."""
    words: list[str] = []
    for word in name.lower().split():
        words += [word] * (len(tokenizer(word).input_ids) - 2)  # without the start and end tokens
    return words


def word_token_embeddings(
    text_encoder: Any, tokenizer: Any, class_names: Sequence[str], words: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """As `class_token_embeddings`, (N, K, D) zero-padded, but each word of a name encoded alone: a word is
    one vector in every name. Why: CLIP reads left to right, so in "red ring" the vector of "ring" depends
    on "red", and a name never seen in training gives its second word a vector training never showed.

    `words`, if given, caches each word's (K_w, D) vectors across calls: a word is encoded once, not once
    per class tuple it appears in (the vectors are the same either way)."""
    words = {} if words is None else words
    for word in {word for name in class_names for word in name.split()} - words.keys():
        words[word] = class_token_vectors(text_encoder, tokenizer, word, [word])[0]
    per_class = [torch.cat([words[word] for word in name.split()]) for name in class_names]
    return torch.nn.utils.rnn.pad_sequence(per_class, batch_first=True)


def padded_tokens(class_tokens: torch.Tensor) -> torch.Tensor:
    """(..., K) bool, True for the zero vectors that pad shorter names in `class_token_embeddings`'s
    (..., K, D) output."""
    return class_tokens.abs().amax(dim=-1) == 0

"""Instruction examples from labelled text, and their answer-only causal-LM encoding."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch

from elsa.data import TextDataset
from elsa.data.instructions import (
    IGNORE_INDEX,
    InstructionExample,
    encode_instructions,
    headline_instructions,
    label_instructions,
)
from elsa.errors import DataError

PAD, EOS, BOS = 0, 1, 2


class WordTokenizer:
    """One id per distinct whitespace-separated word (from 10); BOS first with special tokens."""

    eos_token_id = EOS
    pad_token_id = PAD

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [self.vocab.setdefault(w, 10 + len(self.vocab)) for w in text.split()]
        return {"input_ids": ([BOS] if add_special_tokens else []) + ids}


def news() -> TextDataset:
    texts = (
        "Shares rise. Markets were up today in London.",
        "Team wins cup! The final ended two nil.",
        "no sentence end here at all",
        " ".join(["word"] * 25) + ". Then a body.",
    )
    return TextDataset("news", texts, np.array([0, 1, 1, 0]), ("business", "sport"))


def test_label_instructions_answer_with_the_label_name() -> None:
    examples = label_instructions(news(), "Give the topic.", input_words=3)
    assert [e.response for e in examples] == ["business", "sport", "sport", "business"]
    assert examples[0] == InstructionExample("label", "Give the topic.", "Shares rise. Markets", "business")
    assert (
        examples[0].prompt
        == "### Instruction: Give the topic.\n### Input: Shares rise. Markets\n### Response:"
    )


def test_headline_instructions_split_off_the_first_sentence() -> None:
    examples = headline_instructions(news(), input_words=4, max_headline_words=20)
    # the third text has no sentence end, the fourth a 25-word first sentence: both skipped
    assert [(e.response, e.input) for e in examples] == [
        ("Shares rise", "Markets were up today"),
        ("Team wins cup!", "The final ended two"),
    ]
    assert all(e.kind == "headline" for e in examples)


@pytest.mark.parametrize("words", [0, -1])
def test_instructions_need_input_words(words: int) -> None:
    with pytest.raises(DataError, match="input_words"):
        label_instructions(news(), input_words=words)
    with pytest.raises(DataError, match="input_words"):
        headline_instructions(news(), input_words=words)


def test_encode_scores_only_the_answer_and_eos() -> None:
    tok = WordTokenizer()
    example = InstructionExample("label", "Topic?", "a b", "sport")
    ids, mask, labels = encode_instructions(cast(Any, tok), [example], max_length=16)
    v = tok.vocab
    marker = [v["###"], v["Response:"]]
    head = [BOS, v["###"], v["Instruction:"], v["Topic?"], v["###"], v["Input:"], v["a"], v["b"]]
    row = [*head, *marker, v["sport"], EOS]
    assert ids[0].tolist() == row + [PAD] * (16 - len(row))
    assert mask[0].tolist() == [1] * len(row) + [0] * (16 - len(row))
    assert labels[0].tolist() == [IGNORE_INDEX] * 10 + [v["sport"], EOS] + [IGNORE_INDEX] * 4
    assert ids.dtype == mask.dtype == labels.dtype == torch.long


def test_encode_truncates_the_prompt_head_and_keeps_the_answer() -> None:
    tok = WordTokenizer()
    example = InstructionExample("headline", "Write.", " ".join(f"w{i}" for i in range(30)), "Big news")
    ids, mask, labels = encode_instructions(cast(Any, tok), [example], max_length=12)
    assert int(mask.sum()) == 12
    answer = [tok.vocab["Big"], tok.vocab["news"], EOS]
    assert ids[0, -3:].tolist() == answer
    assert ids[0, -5:-3].tolist() == [tok.vocab["###"], tok.vocab["Response:"]]
    assert labels[0, -3:].tolist() == answer
    assert (labels[0, :-3] == IGNORE_INDEX).all()


def test_encode_refuses_an_answer_that_cannot_fit_and_empty_input() -> None:
    tok = WordTokenizer()
    long_answer = InstructionExample("label", "x", "y", " ".join(["z"] * 10))
    with pytest.raises(DataError, match="max_length"):
        encode_instructions(cast(Any, tok), [long_answer], max_length=8)
    with pytest.raises(DataError, match="empty"):
        encode_instructions(cast(Any, tok), [], max_length=8)

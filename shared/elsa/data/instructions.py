"""Instruction-style examples for causal-LM fine-tuning, built from a labelled text dataset (DESIGN §4).

The packaged corpora are classification sets; a decoder LLM is fine-tuned on them as prompts
with a short answer, in the plain "### Instruction / ### Input / ### Response" layout::

    ### Instruction: Give the topic of this article.
    ### Input: <the first words of the article>
    ### Response: sport

* :func:`label_instructions` — the answer is the example's label name (any :class:`TextDataset`);
* :func:`headline_instructions` — the answer is the text's first sentence and the input the rest
  (for BBC News, whose texts are ``title + ". " + body``, the first sentence is exactly the title);
* :func:`encode_instructions` — token ids, mask and next-token labels that score only the answer
  (and the end-of-sequence token after it), never the prompt or the padding.

Pure functions: nothing here reads files, touches global RNG state or mutates its inputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from elsa.data.datasets import TextDataset, normalize_whitespace
from elsa.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "IGNORE_INDEX",
    "InstructionExample",
    "encode_instructions",
    "headline_instructions",
    "label_instructions",
]

IGNORE_INDEX = -100
"""Label of a position the loss skips (prompt and padding), as in ``torch.nn.functional.cross_entropy``."""

_SENTENCE_END = re.compile(r"(?<=[.!?]) ")


@dataclass(frozen=True)
class InstructionExample:
    """One prompt/answer pair; ``kind`` names the instruction family (``"label"``, ``"headline"``)."""

    kind: str
    instruction: str
    input: str
    response: str

    @property
    def prompt_head(self) -> str:
        """The prompt up to and including the input (the part truncated when too long)."""
        return f"### Instruction: {self.instruction}\n### Input: {self.input}"

    @property
    def prompt(self) -> str:
        """The whole prompt; the answer follows it after one space."""
        return f"{self.prompt_head}\n### Response:"


def _first_words(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def label_instructions(
    ds: TextDataset, instruction: str = "Give the topic of this article.", input_words: int = 40
) -> tuple[InstructionExample, ...]:
    """One example per text: its first ``input_words`` words, answered by its label name.

    Returns a tuple in dataset order. ``ds`` is not mutated. Raises :class:`DataError` for
    ``input_words < 1`` or an empty instruction.
    """
    _check(instruction, input_words)
    return tuple(
        InstructionExample("label", instruction, _first_words(text, input_words), ds.label_names[int(label)])
        for text, label in zip(ds.texts, ds.labels, strict=True)
    )


def headline_instructions(
    ds: TextDataset,
    instruction: str = "Write a headline for this article.",
    input_words: int = 40,
    max_headline_words: int = 20,
) -> tuple[InstructionExample, ...]:
    """One example per text whose first sentence is a plausible headline, answered by it.

    The first sentence ends at the first ``.``, ``!`` or ``?`` followed by a space; a final
    ``.`` is dropped from the answer. The input is the first ``input_words`` words after it.
    Texts with a single sentence or a first sentence longer than ``max_headline_words`` words
    are skipped. Returns a tuple in dataset order; ``ds`` is not mutated.
    """
    _check(instruction, input_words)
    out: list[InstructionExample] = []
    for text in ds.texts:
        parts = _SENTENCE_END.split(text, maxsplit=1)
        if len(parts) != 2:
            continue
        headline = normalize_whitespace(parts[0]).removesuffix(".")
        body = _first_words(parts[1], input_words)
        if not headline or not body or len(headline.split()) > max_headline_words:
            continue
        out.append(InstructionExample("headline", instruction, body, headline))
    return tuple(out)


def _check(instruction: str, input_words: int) -> None:
    if input_words < 1:
        raise DataError(f"input_words must be >= 1, got {input_words}")
    if not instruction.strip():
        raise DataError("the instruction must not be empty")


def encode_instructions(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[InstructionExample], max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenise examples to ``(input_ids, attention_mask, labels)``, each (N x max_length) int64.

    Each row is ``prompt_head + "\\n### Response:" + " " + response + EOS``, right-padded with
    the tokenizer's pad token (its EOS when it has none). ``labels`` equal the ids on the answer
    and EOS positions and :data:`IGNORE_INDEX` elsewhere, so a causal-LM loss over shifted labels
    scores only the answer. When a row is too long, the prompt head is truncated (the response
    marker and the answer are always kept). Raises :class:`DataError` for no examples, a tokenizer
    without EOS, or an answer that does not fit in ``max_length``. Inputs are not mutated.
    """
    if not examples:
        raise DataError("cannot encode an empty list of instruction examples")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no end-of-sequence token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def ids_of(text: str, special: bool) -> list[int]:
        return list(tokenizer(text, add_special_tokens=special)["input_ids"])

    marker = ids_of("\n### Response:", False)
    rows: list[tuple[list[int], int]] = []
    for ex in examples:
        answer = [*ids_of(" " + ex.response, False), int(eos)]
        room = max_length - len(marker) - len(answer)
        if room < 1:
            raise DataError(
                f"the answer of a {ex.kind} example needs {len(marker) + len(answer) + 1} tokens, "
                f"max_length is {max_length}"
            )
        head = ids_of(ex.prompt_head, True)[:room]
        rows.append(([*head, *marker, *answer], len(head) + len(marker)))
    ids = torch.full((len(rows), max_length), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), max_length), dtype=torch.long)
    labels = torch.full((len(rows), max_length), IGNORE_INDEX, dtype=torch.long)
    for i, (row, answer_start) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
        labels[i, answer_start : len(row)] = ids[i, answer_start : len(row)]
    return ids, mask, labels

"""Turning text into right-padded token batches (device side only: raw text never leaves it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from elsa.errors import DataError


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise ``texts`` to (input_ids, attention_mask), both (N x max_length) int64.

    Right padding, truncation at ``max_length`` (special tokens included). Inputs unchanged.
    """
    if not texts:
        raise DataError("cannot tokenise an empty list of texts")
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return enc["input_ids"].to(torch.long), enc["attention_mask"].to(torch.long)


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop trailing columns that are padding in every row (saves compute and bytes)."""
    longest = int(attention_mask.sum(dim=1).max()) if attention_mask.numel() else 0
    longest = max(longest, 1)
    return input_ids[:, :longest], attention_mask[:, :longest]


def causal_lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Next-token labels for causal-LM fine-tuning: ids with -100 on padding (new tensor)."""
    return input_ids.masked_fill(attention_mask == 0, -100)

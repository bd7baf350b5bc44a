"""One vector per sequence from final hidden states (DESIGN §2.3): what fingerprints summarise."""

from __future__ import annotations

from typing import Literal

import torch

from elsa.errors import ConfigError

Pooling = Literal["cls", "mean"]

__all__ = ["Pooling", "pooled_representation"]


def pooled_representation(hidden: torch.Tensor, attention_mask: torch.Tensor, kind: Pooling) -> torch.Tensor:
    """One vector per sequence from final hidden states (DESIGN §2.3).

    ``hidden``: (B x S x d) float; ``attention_mask``: (B x S), 1 on real tokens, 0 on padding.
    ``kind="cls"`` takes position 0 ([CLS], encoders); ``kind="mean"`` averages the real tokens
    (decoders; a row with no real token pools to zeros). Returns (B x d) in ``hidden``'s dtype;
    inputs are not mutated.
    """
    if hidden.dim() != 3:
        raise ConfigError(f"hidden states must be (B x S x d), got shape {tuple(hidden.shape)}")
    if tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise ConfigError(
            f"attention mask shape {tuple(attention_mask.shape)} != hidden (B x S) {tuple(hidden.shape[:2])}"
        )
    if kind == "cls":
        return hidden[:, 0, :].clone()
    if kind == "mean":
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        total = (hidden * mask).sum(dim=1)
        count = mask.sum(dim=1).clamp_min(1.0)
        return total / count
    raise ConfigError(f"unknown pooling {kind!r}; use 'cls' or 'mean'")

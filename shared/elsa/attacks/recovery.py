"""Token recovery: how many transmitted tokens an attacker names correctly (DESIGN §3, §7.4).

Every attack in :mod:`elsa.attacks` ends the same way: one vector per transmitted token, compared
by cosine similarity with every row of the model's word-embedding table; the ``k`` most similar
rows are the attacker's guesses. :func:`recovery_rate` scores guesses against the true token ids:
*top-1* = the best guess is the token, *top-5* = the token is among the first five guesses.
Special tokens ([CLS], [SEP], [PAD], ...) carry no private content and are trivially
recognisable, so they are excluded from the metric (:func:`token_mask`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from elsa.errors import ConfigError, TensorError

__all__ = [
    "TOP_K",
    "Recovery",
    "cosine_top_k",
    "nearest_neighbour_recovery",
    "recovery_rate",
    "token_mask",
]

#: guesses kept per token: top-1 and top-5 are reported
TOP_K = 5
_ROWS_PER_BATCH = 2048


@dataclass(frozen=True)
class Recovery:
    """Token recovery rates over ``n`` scored tokens: top-1 and top-5 hit rates in [0, 1]."""

    top1: float
    top5: float
    n: int


def _check_ids(token_ids: torch.Tensor, rows: int | None, what: str) -> None:
    if token_ids.dim() != 1 or token_ids.dtype not in (torch.int32, torch.int64):
        raise TensorError(
            f"{what} must be a 1-d integer tensor, got {token_ids.dtype} {tuple(token_ids.shape)}"
        )
    if rows is not None and int(token_ids.shape[0]) != rows:
        raise TensorError(f"{what} has {int(token_ids.shape[0])} entries for {rows} rows")


def token_mask(token_ids: torch.Tensor, exclude_ids: Collection[int] = ()) -> torch.Tensor:
    """Boolean mask ``(N,)``: True where ``token_ids`` (N,) is not one of ``exclude_ids``.

    Use ``tokenizer.all_special_ids`` as ``exclude_ids``. Inputs are not mutated.
    """
    _check_ids(token_ids, None, "token_ids")
    if not exclude_ids:
        return torch.ones(token_ids.shape, dtype=torch.bool, device=token_ids.device)
    excluded = torch.as_tensor(sorted(set(exclude_ids)), dtype=token_ids.dtype, device=token_ids.device)
    return ~torch.isin(token_ids, excluded)


@torch.no_grad()
def cosine_top_k(
    vectors: torch.Tensor, table: torch.Tensor, k: int = TOP_K, batch_rows: int = _ROWS_PER_BATCH
) -> torch.Tensor:
    """Indices ``(N, k)`` int64 of the ``k`` rows of ``table`` (V, d) most cosine-similar to each
    row of ``vectors`` (N, d), most similar first.

    Computed in float32, ``batch_rows`` rows of ``vectors`` at a time (memory ``batch_rows x V``).
    Zero rows have similarity 0 to everything. Ties are broken by :func:`torch.topk`. Inputs are
    not mutated. Raises TensorError on mismatched or non-floating shapes and ConfigError unless
    ``1 <= k <= V``.
    """
    if vectors.dim() != 2 or table.dim() != 2 or vectors.shape[1] != table.shape[1]:
        raise TensorError(
            f"need vectors (N, d) and table (V, d), got {tuple(vectors.shape)} and {tuple(table.shape)}"
        )
    if not (vectors.is_floating_point() and table.is_floating_point()):
        raise TensorError(f"cosine similarity needs floating tensors, got {vectors.dtype} and {table.dtype}")
    if not 1 <= k <= int(table.shape[0]):
        raise ConfigError(f"k must be in [1, {int(table.shape[0])}] (table rows), got {k}")
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be >= 1, got {batch_rows}")
    unit_table = F.normalize(table.detach().to(torch.float32), dim=1)
    out = [torch.zeros((0, k), dtype=torch.long, device=unit_table.device)]
    for start in range(0, int(vectors.shape[0]), batch_rows):
        chunk = F.normalize(vectors[start : start + batch_rows].detach().to(torch.float32), dim=1)
        out.append((chunk.to(unit_table.device) @ unit_table.T).topk(k, dim=1).indices)
    return torch.cat(out)


def recovery_rate(
    candidates: torch.Tensor, token_ids: torch.Tensor, exclude_ids: Collection[int] = ()
) -> Recovery:
    """Score guesses ``candidates`` (N, k) int, best first, against the true ``token_ids`` (N,).

    top-1 = share of scored tokens whose first guess is right; top-5 = share whose true id is
    among the first ``min(k, 5)`` guesses. Tokens whose true id is in ``exclude_ids`` (special
    tokens) are not scored and not counted in ``n``. Inputs are not mutated. Raises TensorError
    on shape/dtype mismatch and ConfigError when no token is left to score.
    """
    if candidates.dim() != 2 or candidates.shape[1] < 1 or candidates.dtype not in (torch.int32, torch.int64):
        raise TensorError(
            f"candidates must be an (N, k >= 1) integer tensor, got {candidates.dtype} {tuple(candidates.shape)}"
        )
    _check_ids(token_ids, int(candidates.shape[0]), "token_ids")
    keep = token_mask(token_ids, exclude_ids)
    n = int(keep.sum())
    if n == 0:
        raise ConfigError("no token left to score (every token is excluded or the input is empty)")
    truth = token_ids[keep].to(torch.long)
    guesses = candidates[keep].to(torch.long)
    top1 = float((guesses[:, 0] == truth).to(torch.float64).mean())
    top5 = float((guesses[:, :TOP_K] == truth[:, None]).any(dim=1).to(torch.float64).mean())
    return Recovery(top1=top1, top5=top5, n=n)


def nearest_neighbour_recovery(
    activations: torch.Tensor,
    token_ids: torch.Tensor,
    embeddings: torch.Tensor,
    exclude_ids: Collection[int] = (),
) -> Recovery:
    """Attack (a): each transmitted row of ``activations`` (N, d) is guessed to be the token whose
    word embedding (a row of ``embeddings``, V x d) is most cosine-similar to it.

    Needs nothing but the public base model's embedding table. At the first cut of an encoder
    the residual stream still carries the token's embedding, which is what SS-OP's noise must
    drown. ``token_ids`` (N,) are the true ids; ``exclude_ids`` are not scored. Inputs are not
    mutated.
    """
    if activations.dim() != 2:
        raise TensorError(f"activations must have shape (N, d), got {tuple(activations.shape)}")
    _check_ids(token_ids, int(activations.shape[0]), "token_ids")
    keep = token_mask(token_ids, exclude_ids)
    if not bool(keep.any()):
        raise ConfigError("no token left to score (every token is excluded or the input is empty)")
    k = min(TOP_K, int(embeddings.shape[0]))
    return recovery_rate(cosine_top_k(activations[keep], embeddings, k), token_ids[keep])

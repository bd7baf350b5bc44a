"""Evaluation of an adapter state on held-out examples (DESIGN §2.9)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from elsa.model.split import SplitModel
from elsa.model.training import task_loss


@torch.no_grad()
def evaluate_state(
    model: SplitModel,
    state: Mapping[str, torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 64,
) -> dict[str, float]:
    """Mean loss (and accuracy for classification) of ``state`` on the given examples.

    Runs the unsplit model with ``state`` loaded (identical to the split model with fp32 cuts).
    ids/mask: (N x S) int64; labels (N,) class ids or (N x S) token ids with -100 on padding.
    Returns ``{"loss": ..., "accuracy": ...}`` (accuracy only for classification). Loads
    ``state`` into the shared model's live parameters; inputs are not mutated.
    """
    n = int(input_ids.shape[0])
    total_loss, correct, weight = 0.0, 0, 0
    task = model.task_model.task
    model.load_state(state)
    peft_model = model.task_model.peft_model
    for start in range(0, n, batch_size):
        ids = input_ids[start : start + batch_size]
        mask = attention_mask[start : start + batch_size]
        lab = labels[start : start + batch_size]
        longest = max(int(mask.sum(dim=1).max()), 1)
        ids, mask = ids[:, :longest], mask[:, :longest]
        if lab.dim() == 2:
            lab = lab[:, :longest]
        logits = peft_model(input_ids=ids, attention_mask=mask).logits
        total_loss += float(task_loss(task, logits, lab)) * int(ids.shape[0])
        weight += int(ids.shape[0])
        if task == "classification":
            correct += int((logits.argmax(dim=-1) == lab).sum())
    out = {"loss": total_loss / max(weight, 1)}
    if task == "classification":
        out["accuracy"] = correct / max(weight, 1)
    return out

"""Edge-side protocol checks of the split step (DESIGN §2.7)."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_batch, tiny_task_model
from elsa.errors import AdapterMismatchError, ConflictError
from elsa.model.split import SplitModel
from elsa.model.training import EdgeStepper
from elsa.params import SplitParams, TrainParams


def test_backward_without_matching_forward_is_a_conflict() -> None:
    model = SplitModel(tiny_task_model("bert"))
    segs = model.segments(SplitParams(1, 1))
    edge = EdgeStepper.create(segs.body, model.initial_state(), TrainParams())
    ids, mask, _ = tiny_batch()
    lower = torch.randn(ids.shape[0], ids.shape[1], 32)
    with pytest.raises(ConflictError, match="pending forward is step None"):
        edge.backward(0, torch.zeros_like(lower))
    upper = edge.forward(3, lower, mask)
    with pytest.raises(ConflictError, match="step 4"):
        edge.backward(4, torch.zeros_like(upper))
    grad = edge.backward(3, torch.ones_like(upper))
    assert grad.shape == lower.shape
    assert float(grad.abs().sum()) > 0


def test_optimizer_step_changes_only_the_session_copy() -> None:
    model = SplitModel(tiny_task_model("llama"))
    segs = model.segments(SplitParams(1, 1))
    start = model.initial_state()
    edge = EdgeStepper.create(segs.body, start, TrainParams(learning_rate=0.1))
    ids, mask, _ = tiny_batch()
    upper = edge.forward(0, torch.randn(ids.shape[0], ids.shape[1], 32), mask)
    edge.backward(0, torch.randn_like(upper))
    changed = [k for k in edge.state if not torch.equal(edge.state[k].detach(), start[k])]
    assert changed, "the body adapter moved"
    after = model.initial_state()
    assert all(torch.equal(after[k], start[k]) for k in start), "the shared model is untouched"


def test_segment_run_rejects_incomplete_state() -> None:
    model = SplitModel(tiny_task_model("bert"))
    segs = model.segments(SplitParams(1, 1))
    ids, mask, _ = tiny_batch()
    with pytest.raises(AdapterMismatchError):
        segs.head.run({}, ids, mask)

"""elsa.sketch.ErrorFeedback: sender-side residual memory makes a sketched stream converge (DESIGN §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elsa.errors import GeometryMismatchError
from elsa.sketch import ErrorFeedback, SketchParams, unsketch_state, weighted_sum

SHAPES = {"blocks.0.q.lora_A.weight": (8, 384), "blocks.0.q.lora_B.weight": (384, 8), "head.bias": (4,)}


def _state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) for k, shape in SHAPES.items()}


def _norm(state: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(torch.stack([(t.double() ** 2).sum() for t in state.values()]).sum()))


def _stream(
    params: SketchParams, senders: list[dict[str, torch.Tensor]], rounds: int, *, rescale: bool = True
) -> tuple[list[float], list[float]]:
    """Every sender sends the same delta each round; the receiver merges in sketch space and decodes once.

    Returns, per round, the relative error of the mean decoded update against the true mean
    delta, and the total residual norm relative to the delta norm.
    """
    memories = [ErrorFeedback(params, seed=9, rescale=rescale) for _ in senders]
    target = {k: torch.stack([s[k] for s in senders]).mean(dim=0) for k in SHAPES}
    total = {k: torch.zeros(shape) for k, shape in SHAPES.items()}
    errors, residuals = [], []
    for rnd in range(rounds):
        sent = [
            (mem.compress(delta, round=rnd), 1.0 / len(senders))
            for mem, delta in zip(memories, senders, strict=True)
        ]
        decoded = unsketch_state(weighted_sum(sent), SHAPES, params)
        for k in SHAPES:
            total[k] += decoded[k]
        mean = {k: total[k] / (rnd + 1) - target[k] for k in SHAPES}
        errors.append(_norm(mean) / _norm(target))
        residuals.append(sum(m.residual_norm() for m in memories) / sum(_norm(s) for s in senders))
    return errors, residuals


@pytest.mark.parametrize("estimator", ["median", "mean"])
def test_error_feedback_drives_the_accumulated_error_of_a_repeated_stream_to_zero(estimator: str) -> None:
    params = SketchParams(estimator=estimator)  # type: ignore[arg-type]
    errors, residuals = _stream(params, [_state(0)], rounds=100)
    assert errors[0] > 0.5  # one 8x sketch of a dense delta is far off ...
    assert errors[-1] < 0.2  # ... the running mean of the stream converges
    assert errors[-1] < 0.6 * errors[49] < 0.6 * errors[19]
    assert max(residuals) < 25.0  # the residual stays bounded
    assert residuals[-1] < 1.1 * residuals[49]


def test_error_feedback_converges_when_the_receiver_merges_many_senders() -> None:
    errors, residuals = _stream(SketchParams(), [_state(s) for s in range(4)], rounds=60)
    assert errors[-1] < 0.25
    assert errors[-1] < 0.6 * errors[19]
    assert max(residuals) < 25.0


def test_heavy_hitter_decoding_with_error_feedback_makes_progress() -> None:
    params = SketchParams(topk_fraction=0.05)
    errors, residuals = _stream(params, [_state(1)], rounds=40)
    assert errors[-1] < 0.8 * errors[4]
    assert max(residuals) < 60.0


def test_plain_feedback_without_rescaling_diverges_on_dense_deltas() -> None:
    # Why ErrorFeedback rescales: the 8x count sketch of a dense vector is not contractive.
    _, residuals = _stream(SketchParams(), [_state(0)], rounds=15, rescale=False)
    assert residuals[-1] > 1e3


def test_exactly_decodable_deltas_leave_no_residual() -> None:
    sparse = torch.zeros(64, 48)
    sparse[1, 2], sparse[40, 40] = 3.0, -1.0
    params = SketchParams(cols=300, estimator="median")
    memory = ErrorFeedback(params, seed=0)
    delta = {"w": sparse, "b": torch.ones(3)}
    before = {k: v.clone() for k, v in delta.items()}
    sent = memory.compress(delta, round=0)
    assert memory.residual_norm() == 0.0
    assert set(memory.residual()) == {"w"}  # dense "b" keeps no residual
    back = unsketch_state(sent, {"w": (64, 48), "b": (3,)}, params)
    assert torch.equal(back["w"], sparse)
    assert torch.equal(back["b"], torch.ones(3))
    for key in delta:
        assert torch.equal(delta[key], before[key])


def test_residual_is_carried_for_absent_keys_and_size_changes_are_refused() -> None:
    memory = ErrorFeedback(SketchParams(), seed=0)
    memory.compress({"w": torch.randn(3072)}, round=0)
    kept = memory.residual()["w"].clone()
    assert float(kept.norm()) > 0
    memory.compress({"v": torch.randn(3072)}, round=1)
    assert torch.equal(memory.residual()["w"], kept)
    memory.residual()["w"].zero_()  # a copy: the memory is unaffected
    assert torch.equal(memory.residual()["w"], kept)
    with pytest.raises(GeometryMismatchError):
        memory.compress({"w": torch.randn(3000)}, round=2)
    memory.reset()
    assert memory.residual() == {}
    assert np.isclose(memory.residual_norm(), 0.0)


def test_error_feedback_with_fp16_tables_converges_and_keeps_the_rounding_of_dense_tensors() -> None:
    """With tables rounded to fp16 where they are made, what the receiver decodes is exactly
    what the sender accounted for, so the stream still converges; a dense tensor's fp16
    rounding is kept as residual and resent."""
    params = SketchParams(estimator="mean", table_dtype="fp16")
    errors, _ = _stream(params, [_state(0)], rounds=100)
    assert errors[-1] < 0.2 and errors[-1] < 0.6 * errors[19]
    memory = ErrorFeedback(params, seed=1)
    bias = {"head.bias": torch.tensor([1.0 + 2**-12, 0.1, -3.3, 7.0])}
    sketch = memory.compress(bias, round=0)["head.bias"]
    assert sketch.geometry.dense
    table = torch.from_numpy(sketch.table.reshape(-1).copy())
    assert torch.equal(table, table.half().float())  # exactly an fp16 value
    torch.testing.assert_close(memory.residual()["head.bias"].float() + table, bias["head.bias"])

"""Split == monolithic: one step through head/body/tail with msgpack round trips at each cut
gives the same loss and LoRA/task-head gradients as the unsplit peft model (DESIGN §2.7)."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_batch, tiny_task_model
from elsa.model.split import SplitModel
from elsa.model.training import Batch, DeviceStepper, EdgeStepper, task_loss
from elsa.params import SplitParams, TrainParams, TransportParams
from elsa.runtime.transport import ACTIVATIONS, GRADIENTS, ByteCounter, InMemoryCutLink

CASES = [
    ("bert", "classification"),
    ("llama", "classification"),
    ("llama", "causal_lm"),
    ("gpt2", "classification"),
    ("gpt2", "causal_lm"),
]


class _NoStepEdge:
    """Edge session that keeps gradients instead of applying them (to compare them)."""

    def __init__(self, stepper: EdgeStepper) -> None:
        self.stepper = stepper

    def forward(self, step: int, lower: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.stepper.forward(step, lower, attention_mask)

    def backward(self, step: int, upper_grad: torch.Tensor) -> torch.Tensor:
        return self.stepper.backward(step, upper_grad, apply=False)


def _perturbed_state(model: SplitModel, seed: int = 5) -> dict[str, torch.Tensor]:
    """Initial state with LoRA B != 0 so every factor gets a non-zero gradient."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in model.initial_state().items()}


def split_vs_monolithic(
    model: SplitModel, split: SplitParams, batch: Batch
) -> tuple[float, float, dict[str, torch.Tensor], dict[str, torch.Tensor], ByteCounter]:
    """Loss and gradients of one split step (fp32 wire) and of the monolithic model."""
    state = _perturbed_state(model)
    segments = model.segments(split)
    device = DeviceStepper.create(segments.head, segments.tail, state, TrainParams())
    edge = EdgeStepper.create(segments.body, state, TrainParams())
    counter = ByteCounter()
    link = InMemoryCutLink("s", _NoStepEdge(edge), TransportParams(dtype="fp32"), counter)
    split_loss = device.step(0, batch, link, apply=False)
    split_grads = {k: v.grad for k, v in {**device.state, **edge.state}.items() if v.grad is not None}

    peft_model = model.task_model.peft_model
    peft_model.zero_grad(set_to_none=True)
    logits = model.monolithic_logits(state, batch.input_ids, batch.attention_mask)
    mono_loss = task_loss(model.task_model.task, logits, batch.labels)
    mono_loss.backward()
    params = dict(model._whole.named_parameters())
    mono_grads = {k: params[n].grad for k, n in model._whole.trainable_names().items()}
    return split_loss, float(mono_loss.detach()), split_grads, mono_grads, counter


@pytest.mark.parametrize(("family", "task"), CASES)
@pytest.mark.parametrize(("head", "tail"), [(1, 1), (2, 1), (1, 2)])
def test_split_step_equals_monolithic_step(family: str, task: str, head: int, tail: int) -> None:
    model = SplitModel(tiny_task_model(family, task))  # type: ignore[arg-type]
    ids, mask, labels = tiny_batch(task=task)  # type: ignore[arg-type]
    split_loss, mono_loss, split_grads, mono_grads, counter = split_vs_monolithic(
        model, SplitParams(head, tail), Batch(ids, mask, labels)
    )
    assert split_loss == pytest.approx(mono_loss, rel=1e-6, abs=1e-6)
    assert set(split_grads) == set(mono_grads), "every LoRA/task-head parameter gets a gradient on one side"
    for key, grad in mono_grads.items():
        assert grad is not None
        assert float(grad.abs().max()) > 0, f"{key}: zero gradient makes the comparison vacuous"
        torch.testing.assert_close(split_grads[key], grad, rtol=1e-5, atol=1e-6, msg=key)
    assert counter.counts[ACTIVATIONS] > 0
    assert counter.counts[GRADIENTS] > 0


def test_fp16_wire_is_close_but_not_identical() -> None:
    model = SplitModel(tiny_task_model("bert"))
    ids, mask, labels = tiny_batch()
    state = _perturbed_state(model)
    segments = model.segments(SplitParams(1, 1))
    losses = {}
    for dtype in ("fp32", "fp16"):
        device = DeviceStepper.create(segments.head, segments.tail, state, TrainParams())
        edge = EdgeStepper.create(segments.body, state, TrainParams())
        link = InMemoryCutLink("s", _NoStepEdge(edge), TransportParams(dtype=dtype), ByteCounter())  # type: ignore[arg-type]
        losses[dtype] = device.step(0, Batch(ids, mask, labels), link, apply=False)
    assert losses["fp16"] == pytest.approx(losses["fp32"], rel=1e-2)


@pytest.mark.slow
def test_split_equals_monolithic_on_real_minilm(minilm_model: SplitModel) -> None:
    tok = minilm_model.task_model.tokenizer
    assert tok is not None
    enc = tok(
        ["Shares rose sharply after the results.", "The striker scored twice in the final.", "A new phone"],
        padding=True,
        return_tensors="pt",
    )
    batch = Batch(enc["input_ids"], enc["attention_mask"], torch.tensor([0, 3, 4]))
    split_loss, mono_loss, split_grads, mono_grads, _ = split_vs_monolithic(
        minilm_model, SplitParams(2, 1), batch
    )
    assert split_loss == pytest.approx(mono_loss, rel=1e-6)
    for key, grad in mono_grads.items():
        torch.testing.assert_close(split_grads[key], grad, rtol=1e-4, atol=1e-6, msg=key)

"""One split-training step, seen from each side of the cuts (DESIGN §2.7).

Device: head forward -> (send lower-cut activations) -> ... -> (receive upper-cut activations)
-> tail forward, loss, tail backward -> (send upper-cut gradient) -> ... -> (receive lower-cut
gradient) -> head backward -> optimizer step.

Edge: body forward with the session's body LoRA (keeping the graph) -> return; on the
gradient: body backward, optimizer step -> return the gradient at the lower cut.

The two halves meet through :class:`CutLink`, a port that the simulation runtime implements in
memory (through the wire codec) and the services implement over HTTP. With fp32 transport and
no perturbation, the gradients equal those of the monolithic model exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch.nn import functional as F

from elsa.errors import ConflictError
from elsa.model.adapters import AdapterState
from elsa.model.split import BodySegment, HeadSegment, TailSegment
from elsa.params import Task, TrainParams


@dataclass(frozen=True)
class Batch:
    """A tokenised batch on the device: ids and mask (B x S, int64) and labels.

    ``labels``: (B,) int64 class ids for classification; (B x S) int64 token ids with -100 on
    ignored positions for causal LM.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def size(self) -> int:
        """Number of examples B."""
        return int(self.input_ids.shape[0])


def task_loss(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy: over examples (classification) or shifted next tokens (causal LM)."""
    if task == "classification":
        return F.cross_entropy(logits.float(), labels)
    shifted = logits[:, :-1, :].float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)


class CutLink(Protocol):
    """The device's view of its edge for one split session (a port; see module docstring)."""

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Send lower-cut activations (B x S x d); receive upper-cut activations (B x S x d)."""
        ...

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        """Send the gradient at the upper cut; receive the gradient at the lower cut."""
        ...


def make_optimizer(params: list[torch.Tensor], train: TrainParams) -> torch.optim.Optimizer:
    """AdamW over caller-owned adapter tensors (no-op when ``params`` is empty)."""
    if not params:
        params = [torch.zeros(1, requires_grad=True)]
    return torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)


def trainable_copy(state: Mapping[str, torch.Tensor], keys: tuple[str, ...]) -> AdapterState:
    """Fresh float32 leaf tensors (requires_grad) for ``keys`` of ``state``; input unchanged."""
    return {k: state[k].detach().to(torch.float32).clone().requires_grad_(True) for k in keys}


#: what a device applies to every lower-cut tensor before it leaves (SS-OP), given the tensor
#: and the stream it belongs to ("train", "probe" or "eval": each stream draws its own noise, so
#: evaluating locally never changes what training sends); identity if None
Outgoing = Callable[[torch.Tensor, str], torch.Tensor]


@dataclass
class DeviceStepper:
    """The device half of split training: owns head/tail adapter tensors and their optimizer.

    ``outgoing`` (SS-OP, :class:`elsa.perturb.ActivationNoise`) transforms every lower-cut
    tensor before it is sent, in training and inference alike; gradients come back for the
    sent tensor and are applied to the head as they are (the noise is additive).
    """

    head: HeadSegment
    tail: TailSegment
    state: AdapterState
    train: TrainParams
    outgoing: Outgoing | None = None
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = make_optimizer(list(self.state.values()), self.train)

    @classmethod
    def create(
        cls,
        head: HeadSegment,
        tail: TailSegment,
        start: Mapping[str, torch.Tensor],
        train: TrainParams,
        outgoing: Outgoing | None = None,
    ) -> DeviceStepper:
        """A stepper starting from the device keys of ``start`` (copied)."""
        keys = tuple(sorted(head.trainable_keys() + tail.trainable_keys()))
        return cls(head, tail, trainable_copy(start, keys), train, outgoing)

    def _send(self, lower: torch.Tensor, stream: str | None) -> torch.Tensor:
        sent = lower.detach()
        return self.outgoing(sent, stream) if self.outgoing is not None and stream is not None else sent

    def step(self, step: int, batch: Batch, link: CutLink, *, apply: bool = True) -> float:
        """One split-training step; returns the loss. ``apply=False`` keeps gradients unapplied."""
        self.optimizer.zero_grad(set_to_none=True)
        lower = self.head.run(self.state, batch.input_ids, batch.attention_mask)
        upper_received = link.forward(step, self._send(lower, "train"), batch.attention_mask)
        upper = upper_received.detach().to(torch.float32).requires_grad_(True)
        logits = self.tail.run(self.state, upper, batch.input_ids, batch.attention_mask)
        loss = task_loss(self.tail.task_model.task, logits, batch.labels)
        loss.backward()  # type: ignore[no-untyped-call]
        if upper.grad is None:
            raise ConflictError("no gradient reached the upper cut")
        lower_grad = link.backward(step, upper.grad)
        lower.backward(lower_grad.to(lower.dtype))  # type: ignore[no-untyped-call]
        if apply:
            self.optimizer.step()
        return float(loss.detach())

    def load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Overwrite the device adapter tensors in place (e.g. after aggregation); keeps Adam state."""
        with torch.no_grad():
            for key, tensor in self.state.items():
                tensor.copy_(state[key])

    @torch.no_grad()
    def predict(self, batch: Batch, link: CutLink, stream: str | None = "eval") -> torch.Tensor:
        """Inference through the split model: logits for ``batch`` (no graph kept)."""
        return self.features(batch, link, stream)[1]

    @torch.no_grad()
    def features(
        self, batch: Batch, link: CutLink, stream: str | None = "eval"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference through the split model: (pooled final representation B x d, logits).

        ``stream`` names the noise stream of what leaves the device; ``None`` sends the clean
        activations (only for links that do not leave the device, e.g. an in-process body).
        """
        lower = self.head.run(self.state, batch.input_ids, batch.attention_mask)
        upper = link.forward(-1, self._send(lower, stream), batch.attention_mask).to(torch.float32)
        pooled, logits = self.tail.call(
            self.state, (upper, batch.input_ids, batch.attention_mask), {"with_features": True}
        )
        return pooled, logits


@dataclass
class EdgeStepper:
    """The edge half of one split session: owns a body adapter copy and its optimizer."""

    body: BodySegment
    state: AdapterState
    train: TrainParams
    optimizer: torch.optim.Optimizer = field(init=False)
    _pending: tuple[int, torch.Tensor, torch.Tensor] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.optimizer = make_optimizer(list(self.state.values()), self.train)

    @classmethod
    def create(cls, body: BodySegment, start: Mapping[str, torch.Tensor], train: TrainParams) -> EdgeStepper:
        """A stepper starting from the body keys of ``start`` (copied)."""
        return cls(body, trainable_copy(start, body.trainable_keys()), train)

    def forward(self, step: int, lower: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Body forward. ``step < 0`` is inference (no graph kept); otherwise the graph is kept
        until :meth:`backward` for the same step."""
        x = lower.detach().to(torch.float32)
        if step < 0:
            with torch.no_grad():
                return self.body.run(self.state, x, attention_mask)
        x.requires_grad_(True)
        upper = self.body.run(self.state, x, attention_mask)
        self._pending = (step, x, upper)
        return upper.detach()

    def backward(self, step: int, upper_grad: torch.Tensor, *, apply: bool = True) -> torch.Tensor:
        """Body backward for the pending step; steps the body optimizer; returns the lower-cut grad."""
        if self._pending is None or self._pending[0] != step:
            pending = None if self._pending is None else self._pending[0]
            raise ConflictError(f"backward for step {step} but the pending forward is step {pending}")
        _, x, upper = self._pending
        self._pending = None
        self.optimizer.zero_grad(set_to_none=True)
        upper.backward(upper_grad.to(upper.dtype))  # type: ignore[no-untyped-call]
        if x.grad is None:
            raise ConflictError("no gradient reached the lower cut")
        if apply:
            self.optimizer.step()
        return x.grad

    def load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Overwrite the body adapter tensors in place; keeps optimizer state."""
        with torch.no_grad():
            for key, tensor in self.state.items():
                tensor.copy_(state[key])

"""A device's private data and training loop (DESIGN §1, §6), shared by both runtimes.

A :class:`DeviceNode` holds its private partition (tokenised once, never shared), its head/tail
adapter tensors and optimizer, and a link to its edge session. Base weights are shared by
reference: an extra simulated device costs only its adapters and optimizer state (once the C
heap stops retaining freed activations, see :mod:`elsa.runtime.memory`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from elsa.errors import ConflictError
from elsa.model.adapters import AdapterState, select, state_delta
from elsa.model.split import Segments
from elsa.model.training import Batch, CutLink, DeviceStepper, Outgoing, task_loss
from elsa.params import TrainParams
from elsa.runtime.exchange import DeltaSender
from elsa.sketch import SketchedState


@dataclass
class DeviceData:
    """A device's tokenised private examples: ids/mask (N x S int64), labels (N,) or (N x S)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batch(self, index: np.ndarray) -> Batch:
        """The examples at ``index`` as a batch, trailing all-padding columns dropped."""
        idx = torch.as_tensor(index, dtype=torch.long)
        mask = self.attention_mask[idx]
        longest = max(int(mask.sum(dim=1).max()), 1)
        labels = self.labels[idx]
        if labels.dim() == 2:
            labels = labels[:, :longest]
        return Batch(self.input_ids[idx][:, :longest], mask[:, :longest], labels)


@dataclass
class DeviceNode:
    """A device: private data, head/tail adapters, and a link to its edge session."""

    device_id: str
    data: DeviceData
    segments: Segments
    stepper: DeviceStepper
    rng: np.random.Generator
    link: CutLink | None = None
    #: hostile behaviour for robustness studies: > 0 replaces the trained model by random noise
    noise_scale: float = 0.0
    #: compression of this device's updates (sketch + error feedback); set by make_device
    sender: DeltaSender | None = None
    #: the model this exchange started from (device keys) and the global model of the round
    base: AdapterState = field(default_factory=dict)
    round_start: AdapterState = field(default_factory=dict)
    _order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _cursor: int = 0

    @property
    def num_examples(self) -> int:
        """Number of private training examples."""
        return len(self.data)

    def next_batch(self, batch_size: int) -> Batch:
        """Next batch of a reshuffled-every-epoch pass over the private data."""
        n = self.num_examples
        size = min(batch_size, n)
        if self._cursor + size > len(self._order):
            self._order = self.rng.permutation(n)
            self._cursor = 0
        index = self._order[self._cursor : self._cursor + size]
        self._cursor += size
        return self.data.batch(index)

    @property
    def keys(self) -> tuple[str, ...]:
        """The adapter keys this device trains (head + tail)."""
        return tuple(self.stepper.state)

    def train_steps(self, steps: int, batch_size: int, first_step: int) -> list[float]:
        """``steps`` split-training steps through the link; returns the losses."""
        if self.link is None:
            raise ConflictError(f"device {self.device_id} has no edge link")
        start = {k: v.detach().clone() for k, v in self.stepper.state.items()} if self.noise_scale > 0 else {}
        losses = [
            self.stepper.step(first_step + i, self.next_batch(batch_size), self.link) for i in range(steps)
        ]
        if self.noise_scale > 0:
            self._replace_update_with_noise(start)
        return losses

    @torch.no_grad()
    def _replace_update_with_noise(self, start: Mapping[str, torch.Tensor]) -> None:
        """A noise attacker: its update (trained - start) becomes Gaussian noise whose std is
        ``noise_scale`` x the RMS of the honest update it replaces (the classic Gaussian attack)."""
        deltas = [(v.detach() - start[k]).flatten() for k, v in self.stepper.state.items()]
        rms = float(torch.cat(deltas).pow(2).mean().sqrt()) if deltas else 0.0
        std = self.noise_scale * max(rms, 1e-6)
        gen = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        self.stepper.load(
            {
                k: start[k] + torch.randn(v.shape, generator=gen, dtype=v.dtype) * std
                for k, v in self.stepper.state.items()
            }
        )

    def resplit(
        self,
        segments: Segments,
        start: Mapping[str, torch.Tensor],
        train: TrainParams,
        outgoing: Outgoing | None = None,
    ) -> None:
        """Move to another cut (new split plan): new segments and a fresh stepper from ``start``
        (``outgoing``: the SS-OP of the new cut)."""
        self.segments = segments
        self.stepper = DeviceStepper.create(segments.head, segments.tail, start, train, outgoing)

    def load_model(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the head/tail part of an aggregated model; the next update is relative to it."""
        self.stepper.load(state)
        self.base = {k: state[k].detach().to(torch.float32).clone() for k in self.keys}

    def start_round(self, global_state: Mapping[str, torch.Tensor]) -> None:
        """Begin a cloud round from the global model (kept: edge broadcasts are deltas on it)."""
        self.round_start = {k: v.detach().to(torch.float32) for k, v in global_state.items()}
        self.load_model(select(self.round_start, self.keys))

    def make_update(self, round_index: int) -> SketchedState:
        """The sketched delta of this exchange's training (trained − :attr:`base`)."""
        if self.sender is None:
            raise ConflictError(f"device {self.device_id} has no update sender")
        return self.sender.compress(state_delta(self.stepper.state, self.base), round_index)


@torch.no_grad()
def evaluate_device(device: DeviceNode, data: DeviceData, batch_size: int = 32) -> dict[str, float]:
    """Split inference of the device's current model on ``data`` through its edge link.

    Returns ``{"loss", "accuracy"}`` (accuracy for classification only). Used by device agents
    for local evaluation: the body runs on the edge, so this exercises the real path.
    """
    if device.link is None:
        raise ConflictError(f"device {device.device_id} has no edge link")
    task = device.segments.tail.task_model.task
    total, correct, count = 0.0, 0, 0
    for start in range(0, len(data), batch_size):
        batch = data.batch(np.arange(start, min(start + batch_size, len(data))))
        logits = device.stepper.predict(batch, device.link)
        total += float(task_loss(task, logits, batch.labels)) * batch.size
        count += batch.size
        if task == "classification":
            correct += int((logits.argmax(dim=-1) == batch.labels).sum())
    out = {"loss": total / max(count, 1)}
    if task == "classification":
        out["accuracy"] = correct / max(count, 1)
    return out

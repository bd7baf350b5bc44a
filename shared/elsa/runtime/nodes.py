"""Simulated devices and edges (DESIGN §1, §6): the same steppers the services use.

A :class:`SimDevice` holds its private partition (tokenised once, never shared), its head/tail
adapter tensors and optimizer. A :class:`SimEdge` holds one body-adapter session per assigned
device over the shared frozen body, and aggregates its devices (DESIGN §2.8). Base weights are
shared by reference: an extra simulated device costs only its adapters and optimizer state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from elsa.aggregate import weighted_mean
from elsa.model.adapters import AdapterState, select
from elsa.model.split import Segments
from elsa.model.training import Batch, DeviceStepper, EdgeStepper
from elsa.params import TrainParams
from elsa.runtime.transport import ADAPTERS_DOWN, ADAPTERS_UP, ByteCounter, InMemoryCutLink, ship_adapter


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
class SimEdge:
    """An edge: split sessions (one body-adapter copy per device) and edge aggregation."""

    edge_id: str
    train: TrainParams
    sessions: dict[str, EdgeStepper] = field(default_factory=dict)

    def open_session(
        self, device_id: str, segments: Segments, start: Mapping[str, torch.Tensor]
    ) -> EdgeStepper:
        """Create (or replace) the body session of a device, starting from ``start``."""
        stepper = EdgeStepper.create(segments.body, start, self.train)
        self.sessions[device_id] = stepper
        return stepper

    def load_model(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load an aggregated model into every session's body copy."""
        for stepper in self.sessions.values():
            stepper.load(state)


@dataclass
class SimDevice:
    """A device: private data, head/tail adapters, and a link to its edge session."""

    device_id: str
    data: DeviceData
    segments: Segments
    stepper: DeviceStepper
    rng: np.random.Generator
    link: InMemoryCutLink | None = None
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

    def train_steps(self, steps: int, batch_size: int, first_step: int) -> list[float]:
        """``steps`` split-training steps through the link; returns the losses."""
        if self.link is None:
            raise RuntimeError(f"device {self.device_id} has no edge link")
        return [
            self.stepper.step(first_step + i, self.next_batch(batch_size), self.link) for i in range(steps)
        ]

    def load_model(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the head/tail part of an aggregated model."""
        self.stepper.load(state)


def aggregate_edge(
    edge: SimEdge,
    devices: Sequence[SimDevice],
    *,
    run_id: str,
    round_index: int,
    counter: ByteCounter,
) -> tuple[AdapterState, int]:
    """Edge aggregation (DESIGN §2.8): example-weighted mean of its devices' full adapters.

    A device's full adapter = its head/tail tensors (uploaded through the codec) + its session's
    body tensors (already on the edge). Returns the edge model and its total example count; the
    model is broadcast back to the devices and sessions (bytes counted).
    """
    pairs: list[tuple[AdapterState, float]] = []
    total = 0
    for device in devices:
        received, n = ship_adapter(
            device.stepper.state,
            node_id=device.device_id,
            run_id=run_id,
            round_index=round_index,
            num_examples=device.num_examples,
            kind=ADAPTERS_UP,
            counter=counter,
        )
        body = {k: v.detach() for k, v in edge.sessions[device.device_id].state.items()}
        pairs.append(({**received, **body}, float(n)))
        total += n
    model = weighted_mean(pairs)
    edge.load_model(model)
    for device in devices:
        down, _ = ship_adapter(
            select(model, device.stepper.state.keys()),
            node_id=edge.edge_id,
            run_id=run_id,
            round_index=round_index,
            num_examples=total,
            kind=ADAPTERS_DOWN,
            counter=counter,
        )
        device.load_model(down)
    return model, total

"""Round logic shared by the simulation runtime and the services (DESIGN §2.8, §2.9).

* :class:`EdgeRound` — an edge's book-keeping for one cloud round: which devices it serves,
  their split sessions (body-adapter copies), the head/tail states they submit after each edge
  round, and the example-weighted aggregation once every expected device has submitted (or the
  deadline has passed and the caller closes the round with those present).
* :func:`aggregate_edges` — the cloud's example-weighted mean of the edge models.

Both aggregate in a fixed order (sorted node ids) so both runtimes produce the same floats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from elsa.aggregate import weighted_mean
from elsa.errors import ConflictError, NotFoundError
from elsa.model.adapters import AdapterState, select
from elsa.model.split import Segments
from elsa.model.training import EdgeStepper
from elsa.params import TrainParams


@dataclass
class Submission:
    """A device's head/tail state after one edge round, with its example count."""

    state: AdapterState
    num_examples: int


@dataclass
class EdgeRound:
    """One edge's state for one cloud round (see module docstring)."""

    run_id: str
    round_index: int
    devices: tuple[str, ...]
    start: AdapterState
    train: TrainParams
    sessions: dict[str, EdgeStepper] = field(default_factory=dict)
    submissions: dict[int, dict[str, Submission]] = field(default_factory=dict)
    models: dict[int, AdapterState] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)

    def open_session(self, device_id: str, segments: Segments) -> EdgeStepper:
        """Create the body session of an expected device from the round's start state."""
        if device_id not in self.devices:
            raise NotFoundError(f"device {device_id} is not served by this edge in round {self.round_index}")
        start = self.models[max(self.models)] if self.models else self.start
        stepper = EdgeStepper.create(segments.body, start, self.train)
        self.sessions[device_id] = stepper
        return stepper

    def session(self, device_id: str) -> EdgeStepper:
        """The open session of a device (NotFoundError if none)."""
        if device_id not in self.sessions:
            raise NotFoundError(f"no open session for device {device_id} in round {self.round_index}")
        return self.sessions[device_id]

    def submit(
        self, device_id: str, edge_round: int, state: Mapping[str, torch.Tensor], num_examples: int
    ) -> None:
        """Record a device's head/tail state for ``edge_round`` (replays are rejected)."""
        if device_id not in self.sessions:
            raise NotFoundError(f"device {device_id} has no session in round {self.round_index}")
        if edge_round in self.models:
            raise ConflictError(f"edge round {edge_round} of round {self.round_index} is already aggregated")
        got = self.submissions.setdefault(edge_round, {})
        if device_id in got:
            raise ConflictError(f"device {device_id} already submitted edge round {edge_round}")
        got[device_id] = Submission(dict(state), num_examples)
        self.weights[device_id] = num_examples

    def complete(self, edge_round: int) -> bool:
        """Whether every device with an open session has submitted ``edge_round``."""
        got = self.submissions.get(edge_round, {})
        return bool(self.sessions) and all(d in got for d in self.sessions)

    def aggregate(self, edge_round: int) -> AdapterState:
        """Example-weighted mean over the devices that submitted ``edge_round``.

        A device's full adapter = its submitted head/tail + its session's body copy. Sessions
        then continue from the aggregate. Devices that did not submit are left out (and their
        sessions, if any, are closed). Returns the edge model; idempotent per edge round.
        """
        if edge_round in self.models:
            return self.models[edge_round]
        got = self.submissions.get(edge_round, {})
        if not got:
            raise ConflictError(f"no device submitted edge round {edge_round} of round {self.round_index}")
        pairs: list[tuple[AdapterState, float]] = []
        for device_id in sorted(got):
            body = {k: v.detach() for k, v in self.sessions[device_id].state.items()}
            pairs.append(({**got[device_id].state, **body}, float(got[device_id].num_examples)))
        model = weighted_mean(pairs)
        for device_id in list(self.sessions):
            if device_id in got:
                self.sessions[device_id].load(model)
            else:
                del self.sessions[device_id]
        self.models[edge_round] = model
        return model

    def device_model(self, device_id: str, edge_round: int, keys: Sequence[str]) -> AdapterState:
        """The part of the aggregated model a device needs (its head/tail keys)."""
        if edge_round not in self.models:
            raise ConflictError(f"edge round {edge_round} is not aggregated yet")
        return select(self.models[edge_round], keys)

    def final_model(self) -> tuple[AdapterState, int]:
        """The last aggregated edge model and its total example weight (for the cloud)."""
        if not self.models:
            raise ConflictError(f"round {self.round_index}: nothing aggregated")
        last = max(self.models)
        total = sum(s.num_examples for s in self.submissions[last].values())
        return self.models[last], total


def aggregate_edges(models: Mapping[str, tuple[Mapping[str, torch.Tensor], float]]) -> AdapterState:
    """Cloud aggregation: example-weighted mean of edge models, in sorted edge-id order."""
    if not models:
        raise ConflictError("no edge model to aggregate")
    return weighted_mean([(dict(models[e][0]), models[e][1]) for e in sorted(models)])

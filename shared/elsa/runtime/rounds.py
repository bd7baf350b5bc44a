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
    """One edge's state for one cloud round (see module docstring).

    ``clusters``: device → cluster id (missing = 0); each cluster is aggregated on its own and
    its devices continue from their cluster's model (DESIGN §2.8). ``trust``: device → factor
    of its aggregation weight (trust, 0 for a quarantined device; missing = 1), so a device
    weighs trust × submitted examples (DESIGN §2.5). A cluster whose submitters all weigh 0
    keeps its previous model.
    """

    run_id: str
    round_index: int
    devices: tuple[str, ...]
    start: AdapterState
    train: TrainParams
    clusters: Mapping[str, int] = field(default_factory=dict)
    trust: Mapping[str, float] = field(default_factory=dict)
    sessions: dict[str, EdgeStepper] = field(default_factory=dict)
    submissions: dict[int, dict[str, Submission]] = field(default_factory=dict)
    models: dict[int, dict[int, AdapterState]] = field(default_factory=dict)

    def cluster(self, device_id: str) -> int:
        """The cluster a device is aggregated in."""
        return int(self.clusters.get(device_id, 0))

    def _latest(self, cluster: int) -> AdapterState:
        for edge_round in sorted(self.models, reverse=True):
            if cluster in self.models[edge_round]:
                return self.models[edge_round][cluster]
        return self.start

    def weight(self, device_id: str) -> float:
        """Aggregation weight of a device's latest submission: trust factor × examples."""
        latest = [got[device_id] for _, got in sorted(self.submissions.items()) if device_id in got]
        examples = float(latest[-1].num_examples) if latest else 0.0
        return float(self.trust.get(device_id, 1.0)) * examples

    def open_session(self, device_id: str, segments: Segments) -> EdgeStepper:
        """Create the body session of an expected device (its own cut) from its cluster's model."""
        if device_id not in self.devices:
            raise NotFoundError(f"device {device_id} is not served by this edge in round {self.round_index}")
        stepper = EdgeStepper.create(segments.body, self._latest(self.cluster(device_id)), self.train)
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

    def complete(self, edge_round: int) -> bool:
        """Whether every device with an open session has submitted ``edge_round``."""
        got = self.submissions.get(edge_round, {})
        return bool(self.sessions) and all(d in got for d in self.sessions)

    def aggregate(self, edge_round: int) -> dict[int, AdapterState]:
        """Per-cluster weighted mean over the devices that submitted ``edge_round``.

        A device's full adapter = its submitted head/tail + its session's body copy, keyed by
        global block index, so devices with different cuts aggregate block by block. Sessions
        then continue from their cluster's model. Devices that did not submit are left out (and
        their sessions, if any, are closed). Returns cluster → model; idempotent per edge round.
        """
        if edge_round in self.models:
            return self.models[edge_round]
        got = self.submissions.get(edge_round, {})
        if not got:
            raise ConflictError(f"no device submitted edge round {edge_round} of round {self.round_index}")
        groups: dict[int, list[str]] = {}
        for device_id in sorted(got):
            groups.setdefault(self.cluster(device_id), []).append(device_id)
        models: dict[int, AdapterState] = {}
        for cluster, members in sorted(groups.items()):
            pairs: list[tuple[AdapterState, float]] = []
            for device_id in members:
                weight = self.weight(device_id)
                if weight > 0:
                    body = {k: v.detach() for k, v in self.sessions[device_id].state.items()}
                    pairs.append(({**got[device_id].state, **body}, weight))
            models[cluster] = weighted_mean(pairs) if pairs else self._latest(cluster)
        for device_id in list(self.sessions):
            if device_id in got:
                self.sessions[device_id].load(models[self.cluster(device_id)])
            else:
                del self.sessions[device_id]
        self.models[edge_round] = models
        return models

    def device_model(self, device_id: str, edge_round: int, keys: Sequence[str]) -> AdapterState:
        """The part of its cluster's aggregated model a device needs (its head/tail keys)."""
        if edge_round not in self.models:
            raise ConflictError(f"edge round {edge_round} is not aggregated yet")
        models = self.models[edge_round]
        cluster = self.cluster(device_id)
        if cluster not in models:
            raise ConflictError(f"device {device_id} took no part in edge round {edge_round}")
        return select(models[cluster], keys)

    def final_model(self) -> tuple[AdapterState, int, float]:
        """The edge model for the cloud: (model, examples, weight) of the last edge round.

        The model is the weight-weighted mean of the cluster models, the weight their total
        (linear aggregation, so the cloud's mean over edges equals the mean over all clusters).
        A weight of 0 (every device quarantined) tells the cloud to leave this edge out.
        """
        if not self.models:
            raise ConflictError(f"round {self.round_index}: nothing aggregated")
        last = max(self.models)
        got = self.submissions[last]
        totals: dict[int, float] = {}
        for device_id in got:
            totals[self.cluster(device_id)] = totals.get(self.cluster(device_id), 0.0) + self.weight(
                device_id
            )
        models = self.models[last]
        pairs = [(models[c], totals.get(c, 0.0)) for c in sorted(models)]
        examples = sum(s.num_examples for s in got.values())
        return weighted_mean(pairs), examples, sum(w for _, w in pairs)


def aggregate_edges(
    models: Mapping[str, tuple[Mapping[str, torch.Tensor], float]], fallback: AdapterState | None = None
) -> AdapterState:
    """Cloud aggregation: weighted mean of edge models, in sorted edge-id order.

    Edges of weight 0 are left out; when every edge weighs 0 (all devices quarantined) the
    ``fallback`` (the previous global model) is kept, or ConflictError without one.
    """
    weighted = {e: m for e, m in models.items() if m[1] > 0}
    if not weighted:
        if fallback is not None and models:
            return dict(fallback)
        raise ConflictError("no edge model with a positive weight to aggregate")
    return weighted_mean([(dict(weighted[e][0]), weighted[e][1]) for e in sorted(weighted)])

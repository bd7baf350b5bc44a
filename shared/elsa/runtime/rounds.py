"""Round logic shared by the simulation runtime and the services (DESIGN §2.8, §2.9, §3).

* :class:`EdgeRound` — an edge's book-keeping for one cloud round: which devices it serves,
  their split sessions (body-adapter copies), the sketched head/tail deltas they submit after
  each edge round, and the per-cluster aggregation *in sketch space* once every expected device
  has submitted (or the deadline has passed and the caller closes the round with those present).
* :func:`aggregate_edges` — the cloud's weighted merge of the edges' sketches, decoded once.

Every node's model is ``start + decode(merged sketch) (+ exact edge-held part)``: a cluster's
model after edge round e is the round's start plus the decoded sum of its merged device
sketches so far, plus the exact mean of its edge-held (body) deltas. Receivers of a merged
sketch decode it exactly as the aggregator did, so broadcasts are sketches too. The edge's
upload to the cloud is the weighted sum of its cluster sketches (exact, linear) plus a
sketch of its body deltas (with the edge's own error feedback). Both runtimes aggregate in a
fixed order (sorted ids), so both produce the same floats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from elsa.aggregate import norm_bound_scales
from elsa.errors import AdapterMismatchError, ConflictError, NotFoundError
from elsa.model.adapters import AdapterState, select, state_delta
from elsa.model.split import Segments
from elsa.model.training import EdgeStepper
from elsa.params import SketchParams, TrainParams
from elsa.sketch import (
    CountSketch,
    SketchedState,
    SketchGeometry,
    apply_sketches,
    check_same_geometry,
    round_state,
    sketch_state,
    sketched_norm,
    state_geometries,
    weighted_sum,
)

#: sketch parameters under which every tensor travels as an exact (dense) table
EXACT = SketchParams(rows=1, compression=1.0, dense_below=2**40, estimator="mean")


@dataclass
class Submission:
    """A device's sketched head/tail delta after one edge round, with its example count."""

    delta: SketchedState
    num_examples: int


@dataclass
class EdgeRound:
    """One edge's state for one cloud round (see module docstring).

    ``start`` is the global model the round began from (every key). ``sketch`` and ``seed``
    (the run seed) fix the geometry of every sketch of the round: hashes derive from (seed,
    ``round_index``, key), so the devices' sketches, the edge's upload and the cloud's merge
    all share them. ``clusters``: device → cluster id (missing = 0); each cluster is aggregated
    on its own and its devices continue from their cluster's model (DESIGN §2.8). ``trust``:
    device → factor of its aggregation weight (0 for a quarantined device; missing = 1), so a
    device weighs trust × submitted examples (DESIGN §2.5). A cluster whose submitters all
    weigh 0 keeps its previous model. ``norm_bound``: each device's sketched update is scaled
    to at most this multiple of the median update norm of the edge round's submitters before
    merging (``elsa.aggregate.norm_bound_scales``; 0 = off).
    """

    run_id: str
    round_index: int
    devices: tuple[str, ...]
    start: AdapterState
    train: TrainParams
    clusters: Mapping[str, int] = field(default_factory=dict)
    trust: Mapping[str, float] = field(default_factory=dict)
    sketch: SketchParams = EXACT
    seed: int = 0
    norm_bound: float = 0.0
    sessions: dict[str, EdgeStepper] = field(default_factory=dict)
    submissions: dict[int, dict[str, Submission]] = field(default_factory=dict)
    models: dict[int, dict[int, AdapterState]] = field(default_factory=dict)
    #: per aggregated edge round and cluster: the merged sketch of (cluster model − start),
    #: over the device-held keys, and the exact sum of the edge-held mean deltas
    merged: dict[int, dict[int, SketchedState]] = field(default_factory=dict)
    exact: dict[int, dict[int, AdapterState]] = field(default_factory=dict)

    def cluster(self, device_id: str) -> int:
        """The cluster a device is aggregated in."""
        return int(self.clusters.get(device_id, 0))

    def _last(self, cluster: int) -> int | None:
        for edge_round in sorted(self.models, reverse=True):
            if cluster in self.models[edge_round]:
                return edge_round
        return None

    def latest(self, cluster: int) -> AdapterState:
        """A cluster's current model (the round's start before its first aggregation)."""
        last = self._last(cluster)
        return self.start if last is None else self.models[last][cluster]

    def geometries(self, keys: Sequence[str]) -> dict[str, SketchGeometry]:
        """The geometry every sketch of ``keys`` must have in this round."""
        unknown = sorted(set(keys) - set(self.start))
        if unknown:
            raise AdapterMismatchError(f"keys the model does not have: {unknown[:3]}")
        lengths = {k: int(self.start[k].numel()) for k in keys}
        return state_geometries(lengths, self.sketch, self.round_index, self.seed)

    def weight(self, device_id: str) -> float:
        """Aggregation weight of a device's latest submission: trust factor × examples."""
        latest = [got[device_id] for _, got in sorted(self.submissions.items()) if device_id in got]
        examples = float(latest[-1].num_examples) if latest else 0.0
        return float(self.trust.get(device_id, 1.0)) * examples

    def open_session(self, device_id: str, segments: Segments) -> EdgeStepper:
        """Create the body session of an expected device (its own cut) from its cluster's model."""
        if device_id not in self.devices:
            raise NotFoundError(f"device {device_id} is not served by this edge in round {self.round_index}")
        stepper = EdgeStepper.create(segments.body, self.latest(self.cluster(device_id)), self.train)
        self.sessions[device_id] = stepper
        return stepper

    def session(self, device_id: str) -> EdgeStepper:
        """The open session of a device (NotFoundError if none)."""
        if device_id not in self.sessions:
            raise NotFoundError(f"no open session for device {device_id} in round {self.round_index}")
        return self.sessions[device_id]

    def submit(
        self, device_id: str, edge_round: int, delta: Mapping[str, CountSketch], num_examples: int
    ) -> None:
        """Record a device's sketched head/tail delta for ``edge_round`` (replays are rejected).

        Every sketch must have this round's geometry for its key (GeometryMismatchError, 409).
        """
        if device_id not in self.sessions:
            raise NotFoundError(f"device {device_id} has no session in round {self.round_index}")
        if edge_round in self.models:
            raise ConflictError(f"edge round {edge_round} of round {self.round_index} is already aggregated")
        got = self.submissions.setdefault(edge_round, {})
        if device_id in got:
            raise ConflictError(f"device {device_id} already submitted edge round {edge_round}")
        expected = self.geometries(list(delta))
        for key, sketch in delta.items():
            check_same_geometry(expected[key], sketch.geometry)
        got[device_id] = Submission(dict(delta), num_examples)

    def submit_state(
        self, device_id: str, edge_round: int, state: Mapping[str, torch.Tensor], num_examples: int
    ) -> None:
        """Submit a trained head/tail *state*: its delta from the cluster's model, sketched here
        without error feedback (tests and tools; devices sketch with feedback themselves)."""
        base = self.latest(self.cluster(device_id))
        delta = state_delta({k: v.to(torch.float32) for k, v in state.items()}, base)
        self.submit(
            device_id, edge_round, sketch_state(delta, self.sketch, self.round_index, self.seed), num_examples
        )

    def complete(self, edge_round: int) -> bool:
        """Whether every device with an open session has submitted ``edge_round``."""
        got = self.submissions.get(edge_round, {})
        return bool(self.sessions) and all(d in got for d in self.sessions)

    def aggregate(self, edge_round: int) -> dict[int, AdapterState]:
        """Per-cluster weighted mean of the deltas submitted for ``edge_round``, in sketch space.

        Per key, the holders are the submitters whose device trains it (sketched delta) and the
        sessions of submitters whose edge body trains it (exact delta from the cluster model);
        weights (trust × examples) are normalised over a key's holders, so devices with
        different cuts aggregate block by block. Sessions then continue from their cluster's
        model. Devices that did not submit are left out (and their sessions closed). Returns
        cluster → model; idempotent per edge round.
        """
        if edge_round in self.models:
            return self.models[edge_round]
        got = self.submissions.get(edge_round, {})
        if not got:
            raise ConflictError(f"no device submitted edge round {edge_round} of round {self.round_index}")
        scales = norm_bound_scales({d: sketched_norm(s.delta) for d, s in got.items()}, self.norm_bound)
        groups: dict[int, list[str]] = {}
        for device_id in sorted(got):
            groups.setdefault(self.cluster(device_id), []).append(device_id)
        models: dict[int, AdapterState] = {}
        merged: dict[int, SketchedState] = {}
        exact: dict[int, AdapterState] = {}
        for cluster, members in sorted(groups.items()):
            last = self._last(cluster)
            prev_merged = {} if last is None else self.merged[last][cluster]
            prev_exact = {} if last is None else self.exact[last][cluster]
            base = self.latest(cluster)
            live = [(d, w) for d in members if (w := self.weight(d)) > 0]
            totals: dict[str, float] = {}
            for device_id, w in live:
                for key in (*got[device_id].delta, *self.sessions[device_id].state):
                    totals[key] = totals.get(key, 0.0) + w
            parts: list[tuple[Mapping[str, CountSketch], float]] = [(prev_merged, 1.0)] if prev_merged else []
            sums = {k: v.clone() for k, v in prev_exact.items()}
            for device_id, w in live:
                for key, sketch in got[device_id].delta.items():
                    parts.append(({key: sketch}, w / totals[key] * scales[device_id]))
                for key, value in self.sessions[device_id].state.items():
                    change = (value.detach().to(torch.float32) - base[key]) * (w / totals[key])
                    sums[key] = sums[key] + change if key in sums else change
            merged[cluster] = round_state(weighted_sum(parts), self.sketch) if parts else {}
            exact[cluster] = sums
            model = apply_sketches(self.start, merged[cluster], self.sketch)
            for key, value in sums.items():
                model[key] = model[key] + value
            models[cluster] = model
        for device_id in list(self.sessions):
            if device_id in got:
                self.sessions[device_id].load(models[self.cluster(device_id)])
            else:
                del self.sessions[device_id]
        self.models[edge_round] = models
        self.merged[edge_round] = merged
        self.exact[edge_round] = exact
        return models

    def device_model(self, device_id: str, edge_round: int, keys: Sequence[str]) -> AdapterState:
        """The part of its cluster's aggregated model a device needs (its head/tail keys)."""
        models = self._aggregated(device_id, edge_round)
        return select(models[self.cluster(device_id)], keys)

    def device_broadcast(
        self, device_id: str, edge_round: int, keys: Sequence[str]
    ) -> tuple[SketchedState, AdapterState]:
        """What a device receives after ``edge_round``: (merged sketches, full values).

        A key whose cluster update is purely sketched travels as the cluster's merged sketch
        (the device adds its decode to the round's start, exactly as the edge did); a key that
        an edge body also trained (mixed cuts) travels as its full value.
        """
        self._aggregated(device_id, edge_round)
        cluster = self.cluster(device_id)
        merged, exact = self.merged[edge_round][cluster], self.exact[edge_round][cluster]
        model = self.models[edge_round][cluster]
        sketches = {k: merged[k] for k in keys if k in merged and k not in exact}
        values = {k: model[k] for k in keys if k not in sketches}
        return sketches, values

    def _aggregated(self, device_id: str, edge_round: int) -> dict[int, AdapterState]:
        if edge_round not in self.models:
            raise ConflictError(f"edge round {edge_round} is not aggregated yet")
        models = self.models[edge_round]
        if self.cluster(device_id) not in models:
            raise ConflictError(f"device {device_id} took no part in edge round {edge_round}")
        return models

    def _final_weights(self) -> tuple[int, dict[int, float], int]:
        if not self.models:
            raise ConflictError(f"round {self.round_index}: nothing aggregated")
        last = max(self.models)
        got = self.submissions[last]
        totals: dict[int, float] = {}
        for device_id in got:
            cluster = self.cluster(device_id)
            totals[cluster] = totals.get(cluster, 0.0) + self.weight(device_id)
        return last, totals, sum(s.num_examples for s in got.values())

    def final_update(self) -> tuple[SketchedState, AdapterState, int, float]:
        """The edge's contribution for the cloud: (sketch part, exact part, examples, weight).

        The edge model is ``start + decode(sketch part) + exact part`` where the parts are the
        weight-weighted means of the cluster parts (linear, so the cloud's merge over edges
        equals the merge over all clusters). The sender sketches the exact (edge-held) part
        itself before uploading. A weight of 0 (every device quarantined) tells the cloud to
        leave this edge out.
        """
        last, totals, examples = self._final_weights()
        weight = sum(totals.get(c, 0.0) for c in self.models[last])
        if weight <= 0:
            return {}, {}, examples, 0.0
        parts: list[tuple[Mapping[str, CountSketch], float]] = []
        exact: AdapterState = {}
        for cluster in sorted(self.models[last]):
            share = totals.get(cluster, 0.0) / weight
            if share == 0:
                continue
            if self.merged[last][cluster]:
                parts.append((self.merged[last][cluster], share))
            for key, value in self.exact[last][cluster].items():
                exact[key] = exact[key] + value * share if key in exact else value * share
        return (round_state(weighted_sum(parts), self.sketch) if parts else {}), exact, examples, weight

    def final_model(self) -> tuple[AdapterState, int, float]:
        """The edge model itself: (model, examples, weight) — what :meth:`final_update` encodes."""
        sketches, exact, examples, weight = self.final_update()
        model = apply_sketches(self.start, sketches, self.sketch)
        for key, value in exact.items():
            model[key] = model[key] + value
        return model, examples, weight


def aggregate_edges(
    uploads: Mapping[str, tuple[Mapping[str, CountSketch], float]],
    start: Mapping[str, torch.Tensor],
    params: SketchParams,
) -> tuple[AdapterState, SketchedState]:
    """Cloud aggregation: (new global model, merged global delta sketch).

    The merged sketch is Σ_e (w_e / Σw) · sketch_e in sorted edge-id order (a key an edge does
    not send counts as an unchanged key of that edge); the new model is ``start`` plus its
    decode, which every node holding ``start`` reproduces from the merged sketch. Edges of
    weight 0 are left out; when every edge weighs 0 (all devices quarantined) ``start`` is kept
    with an empty delta. ConflictError when there is no upload at all.
    """
    if not uploads:
        raise ConflictError("no edge model to aggregate")
    weighted = {e: u for e, u in uploads.items() if u[1] > 0}
    if not weighted:
        return {k: v.detach().to(torch.float32).clone() for k, v in start.items()}, {}
    total = sum(w for _, w in weighted.values())
    parts = [(weighted[e][0], weighted[e][1] / total) for e in sorted(weighted) if weighted[e][0]]
    merged = round_state(weighted_sum(parts), params) if parts else {}
    return apply_sketches(start, merged, params), merged

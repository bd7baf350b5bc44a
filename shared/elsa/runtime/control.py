"""The control plane (DESIGN §2.2-§2.6): the cloud's decisions, shared by both runtimes.

:class:`ControlPlane` holds a run's cluster ids, trust scores, quarantine set, edge assignment
and split plans, and updates them from what devices report — probe predictions every cloud
round, Gaussian fingerprints every ``recluster_every`` rounds, resources and link probes when
they change. It runs no model and does no I/O: the simulation calls it directly, the cloud
coordinator calls it and mirrors its :meth:`~ControlPlane.snapshot` to Redis (live) and SQL (one
snapshot per round), and restores from either.

Order within cloud round r: the assignment, split plans and aggregation weights of round r use
the clusters and trust known at its start (from rounds < r); the devices' round-r reports update
them at the end of round r. Devices not fingerprinted yet are in cluster 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from elsa.assign import assign_clusters, comm_cost, plan_split
from elsa.cluster import Fingerprint, cluster_fingerprints, match_cluster_ids
from elsa.errors import ConfigError, UnavailableError
from elsa.params import SplitParams
from elsa.runtime.config import RunConfig
from elsa.trust import evidence_by_cluster, quarantined, relative_evidence, sharpen, update_trust
from elsa.wire import ProbeReport, from_payload, to_payload

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ProbeResult:
    """A device's behaviour on the public probe set after a round's local training.

    ``predictions``: (Q x C) class (or next-token) distributions on the probes, every round;
    ``fingerprint``: N(μ, Σ + εI) of its probe representations, in fingerprint rounds only.
    """

    predictions: FloatArray
    fingerprint: Fingerprint | None = None


@dataclass(frozen=True)
class LinkEstimate:
    """A device's measured (or emulated) link to one edge."""

    rtt_s: float
    throughput_bytes_per_s: float


@dataclass(frozen=True)
class DeviceProfile:
    """What the planner knows about one device.

    ``block_step_s``: seconds of one block's forward + backward at the run's batch shape on the
    device; ``memory_bytes``: its budget for segments (None = unlimited); ``links``: edge → link.
    """

    block_step_s: float | None = None
    memory_bytes: int | None = None
    links: Mapping[str, LinkEstimate] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelProfile:
    """What the planner knows about the run's model (reported by the nodes that load it).

    ``cut_bytes``: wire bytes of one cut tensor per step (batch × sequence × width × dtype);
    ``block_memory_bytes``: training footprint of one block on a device; ``base_memory_bytes``:
    what a device needs whatever its cut (embeddings, task head, optimizer, activations).
    """

    num_blocks: int
    cut_bytes: float
    block_memory_bytes: int
    base_memory_bytes: int


@dataclass(frozen=True)
class Observation:
    """What one round's reports changed."""

    reclustered: bool
    clusters: dict[str, int]
    evidence: dict[str, float]
    trust: dict[str, float]
    quarantined: list[str]
    newly_quarantined: list[str]
    recovered: list[str]


def probe_message(result: ProbeResult, node_id: str, run_id: str, round_index: int) -> ProbeReport:
    """The wire message of a probe result (fp32 tensors)."""
    fp = result.fingerprint
    return ProbeReport(
        node_id=node_id,
        run_id=run_id,
        round=round_index,
        predictions=to_payload(torch.from_numpy(np.ascontiguousarray(result.predictions)), "fp32"),
        mu=to_payload(torch.from_numpy(np.array(fp.mu)), "fp32") if fp is not None else None,
        sigma=to_payload(torch.from_numpy(np.array(fp.sigma)), "fp32") if fp is not None else None,
    )


def probe_result(message: ProbeReport, num_probes: int, basis_dim: int) -> ProbeResult:
    """Validate a received probe report: (Q x C) distributions, a well-formed fingerprint.

    ConfigError (422) on the wrong number of probes, negative values, rows that do not sum to 1
    within 1e-3, or a fingerprint that is not a valid k-dim Gaussian (k = the run's basis);
    TensorError (422) on non-finite values.
    """
    predictions = from_payload(message.predictions, dtype=torch.float64).numpy()
    if predictions.ndim != 2 or predictions.shape[0] != num_probes or predictions.shape[1] < 2:
        raise ConfigError(f"predictions must be ({num_probes} x C >= 2), got {predictions.shape}")
    if not np.all(np.isfinite(predictions)) or np.any(predictions < 0):
        raise ConfigError("predictions must be finite and >= 0")
    if not np.allclose(predictions.sum(axis=1), 1.0, atol=1e-3):
        raise ConfigError("every prediction row must sum to 1")
    fingerprint = None
    if (message.mu is None) != (message.sigma is None):
        raise ConfigError("a fingerprint needs both mu and sigma")
    if message.mu is not None and message.sigma is not None:
        sigma = from_payload(message.sigma, dtype=torch.float64).numpy()
        sigma = 0.5 * (sigma + sigma.T) if sigma.ndim == 2 else sigma
        mu = from_payload(message.mu, dtype=torch.float64).numpy()
        if mu.shape != (basis_dim,):
            raise ConfigError(
                f"fingerprint mu must have the run's basis dimension ({basis_dim},), got {mu.shape}"
            )
        fingerprint = Fingerprint(mu=mu, sigma=sigma, num_probes=num_probes)
    return ProbeResult(predictions=predictions, fingerprint=fingerprint)


class ControlPlane:
    """A run's clusters, trust, assignment and split plans (see module docstring)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.clusters: dict[str, int] = {}
        self.trust: dict[str, float] = {}
        self.quarantine: set[str] = set()
        self.assignment: dict[str, str] = {}
        self.plans: dict[str, SplitParams] = {}
        self.next_cluster_id = 1
        self.rounds_assigned = 0

    # -- fingerprints, clusters and trust ------------------------------------------------------

    def fingerprint_round(self, cloud_round: int) -> bool:
        """Whether devices upload fingerprints after ``cloud_round`` (the first, then every n-th)."""
        c = self.config.control
        return c.clustering and (cloud_round - 1) % c.recluster_every == 0

    def cluster_of(self, device: str) -> int:
        """The device's cluster id (0 until it has been fingerprinted)."""
        return self.clusters.get(device, 0)

    def observe(self, reports: Mapping[str, ProbeResult]) -> Observation:
        """Update clusters (when fingerprints came) and trust from one round's probe reports."""
        control = self.config.control
        fingerprints = {d: r.fingerprint for d, r in reports.items() if r.fingerprint is not None}
        reclustered = False
        if control.clustering and len(fingerprints) >= 2:
            names = sorted(fingerprints)
            labels = cluster_fingerprints([fingerprints[d] for d in names], self.config.clustering_params())
            fresh = dict(zip(names, (int(v) for v in labels), strict=True))
            matched = match_cluster_ids(self.clusters, fresh, min_fresh_id=self.next_cluster_id)
            self.clusters.update(matched)
            self.next_cluster_id = max(self.next_cluster_id, max(self.clusters.values()) + 1)
            reclustered = True
        evidence: dict[str, float] = {}
        before = set(self.quarantine)
        if control.trust and len(reports) >= 2:
            predictions = {d: sharpen(r.predictions, control.trust_temperature) for d, r in reports.items()}
            labels_now = {d: self.cluster_of(d) for d in predictions}
            evidence = evidence_by_cluster(
                predictions, labels_now, self.trust, singleton=control.trust_singleton
            )
            if control.trust_evidence == "relative":
                evidence = relative_evidence(evidence, labels_now)
            self.trust = update_trust(self.trust, evidence, self.config.trust_params())
            self.quarantine = quarantined(self.trust, self.config.trust_params())
        return Observation(
            reclustered=reclustered,
            clusters=dict(self.clusters),
            evidence=evidence,
            trust=dict(self.trust),
            quarantined=sorted(self.quarantine),
            newly_quarantined=sorted(self.quarantine - before),
            recovered=sorted(before - self.quarantine),
        )

    def weight(self, device: str, num_examples: int) -> float:
        """Aggregation weight (DESIGN §2.5): trust × examples, 0 when quarantined."""
        if not self.config.control.trust:
            return float(num_examples)
        if device in self.quarantine:
            return 0.0
        return self.trust.get(device, self.config.trust_params().initial) * float(num_examples)

    # -- assignment and split planning ---------------------------------------------------------

    def assign(
        self,
        devices: Sequence[str],
        edges: Mapping[str, int | None],
        profiles: Mapping[str, DeviceProfile],
        model: ModelProfile | None,
    ) -> dict[str, str]:
        """Device → edge for this round (DESIGN §2.6).

        ``edges``: live edge → capacity (None = the configured default). With latency-aware
        assignment and link measurements for every device, clusters (devices not fingerprinted
        yet: one by one) go to edges by the min-bottleneck assignment of :func:`elsa.assign.assign_clusters`; with ``random``, a
        seeded shuffle is spread over the edges (the baseline); otherwise (or when a device has
        not measured its links yet) devices are spread over the edges in name order.
        """
        capacity = {e: (c if c is not None else self.config.control.edge_capacity) for e, c in edges.items()}
        ordered = sorted(devices)
        measured = all(profiles.get(d) is not None and profiles[d].links for d in ordered)
        rule = self.config.control.assignment
        self.rounds_assigned += 1
        if rule == "random":
            rng = np.random.default_rng([self.config.seed, self.rounds_assigned])
            self.assignment = spread([ordered[i] for i in rng.permutation(len(ordered))], capacity, rng)
        elif rule == "latency" and measured and model is not None and capacity:
            groups: dict[int, list[str]] = {}
            for i, d in enumerate(ordered):  # a device not fingerprinted yet is its own group
                groups.setdefault(self.clusters.get(d, -1 - i), []).append(d)
            cost = {(d, e): self.link_cost(profiles[d], e, model) for d in ordered for e in capacity}
            try:
                self.assignment = assign_clusters(groups, capacity, cost, self.config.assignment_params())
            except UnavailableError:  # e.g. a device measured none of the live edges: spread instead
                self.assignment = spread(ordered, capacity)
        else:
            self.assignment = spread(ordered, capacity)
        return dict(self.assignment)

    def link_cost(self, profile: DeviceProfile, edge: str, model: ModelProfile) -> float:
        """Seconds of communication per edge round of a device on ``edge`` (inf if unmeasured).

        Four cut tensors per step (activations to the edge and back, gradients to the edge and
        back); their size does not depend on where the cut is, so neither does the cost.
        """
        link = profile.links.get(edge)
        if link is None:
            return math.inf
        return comm_cost(
            4 * model.cut_bytes, self.config.train.local_steps, link.rtt_s, link.throughput_bytes_per_s
        )

    def plan(
        self,
        device: str,
        profile: DeviceProfile | None,
        model: ModelProfile | None,
        edge_block_step_s: float | None = None,
    ) -> SplitParams:
        """The device's cut (h, t) for this round (DESIGN §2.2).

        With dynamic splitting on and a measured profile, :func:`elsa.assign.plan_split` picks
        the fastest feasible cut for the device's compute, memory and link to its assigned edge,
        against that edge's measured per-block time (``edge_block_step_s``; unknown: the device's
        own time / ``edge_speedup``, which makes the cut depend on memory and bandwidth only).
        Otherwise the run's configured cut. An infeasible memory budget is a ConfigError naming
        the device.
        """
        default = self.config.split_params()
        control = self.config.control
        if not control.dynamic_split or profile is None or profile.block_step_s is None or model is None:
            self.plans[device] = default
            return default
        edge = self.assignment.get(device)
        link = profile.links.get(edge) if edge is not None else None
        throughput = link.throughput_bytes_per_s if link is not None else math.inf
        memory = profile.memory_bytes if profile.memory_bytes is not None else 2**62
        try:
            split = plan_split(
                model.num_blocks,
                profile.block_step_s,
                edge_block_step_s
                if edge_block_step_s is not None
                else profile.block_step_s / control.edge_speedup,
                model.cut_bytes,
                throughput if math.isfinite(throughput) else 1e30,
                memory,
                model.block_memory_bytes,
                model.base_memory_bytes,
            )
        except ConfigError as exc:
            raise ConfigError(f"device {device}: {exc.detail}") from exc
        self.plans[device] = split
        return split

    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state (what Redis holds live and SQL keeps per round)."""
        return {
            "clusters": dict(sorted(self.clusters.items())),
            "trust": dict(sorted(self.trust.items())),
            "quarantined": sorted(self.quarantine),
            "assignment": dict(sorted(self.assignment.items())),
            "split_plans": {d: [p.head_blocks, p.tail_blocks] for d, p in sorted(self.plans.items())},
            "next_cluster_id": self.next_cluster_id,
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Load a :meth:`snapshot` (e.g. after a cloud restart or a Redis flush)."""
        self.clusters = {str(k): int(v) for k, v in dict(snapshot.get("clusters", {})).items()}
        self.trust = {str(k): float(v) for k, v in dict(snapshot.get("trust", {})).items()}
        self.quarantine = (
            quarantined(self.trust, self.config.trust_params()) if self.config.control.trust else set()
        )
        self.assignment = {str(k): str(v) for k, v in dict(snapshot.get("assignment", {})).items()}
        self.plans = {
            str(k): SplitParams(head_blocks=int(v[0]), tail_blocks=int(v[1]))
            for k, v in dict(snapshot.get("split_plans", {})).items()
        }
        default_next = max(self.clusters.values(), default=0) + 1
        self.next_cluster_id = int(snapshot.get("next_cluster_id", default_next))


def spread(
    devices: Sequence[str], capacity: Mapping[str, int], rng: np.random.Generator | None = None
) -> dict[str, str]:
    """Balanced contiguous assignment: device i of n to edge ``i // ceil(n / edges)``.

    Capacity-capped: overflow spills to the next edge with room. The rule the simulation's fixed
    topology uses, and the fallback before devices have measured their links. With ``rng`` the
    edges are taken in a random order (the random-assignment baseline, given shuffled devices).
    """
    if not capacity or not devices:
        return {}
    edges = sorted(capacity)
    if rng is not None:
        edges = [edges[i] for i in rng.permutation(len(edges))]
    per = math.ceil(len(devices) / len(edges))
    load = dict.fromkeys(edges, 0)
    out: dict[str, str] = {}
    for i, device in enumerate(devices):
        preferred = min(i // per, len(edges) - 1)
        for edge in edges[preferred:] + edges[:preferred]:
            if load[edge] < capacity[edge]:
                out[device] = edge
                load[edge] += 1
                break
    return out

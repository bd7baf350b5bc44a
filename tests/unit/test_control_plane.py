"""The control plane on synthetic inputs (DESIGN §2.2-§2.6): clusters, trust, assignment, split
plans, persistence and the probe-report wire message."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from elsa.assign import comm_cost
from elsa.cluster import Fingerprint, gaussian_fingerprint
from elsa.errors import ConfigError, ElsaError
from elsa.params import SplitParams
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.control import (
    ControlPlane,
    DeviceProfile,
    LinkEstimate,
    ModelProfile,
    ProbeResult,
    probe_message,
    probe_result,
)
from elsa.wire import ProbeReport, decode, encode, to_payload

K = 6  # fingerprint dimension of the synthetic devices
Q = 40  # probes
C = 4  # classes


def config(seed: int = 0, **control: Any) -> RunConfig:
    """The default run with some control-plane fields changed."""
    return parse_config({"seed": seed, "control": {"basis_dim": K, **control}})


# --- synthetic device behaviour -----------------------------------------------------------------


def fingerprint(rng: np.random.Generator, group: int, separation: float = 3.0) -> Fingerprint:
    """A device whose projected probe representations are N(separation * e_group, I)."""
    centre = np.eye(K)[group] * separation
    return gaussian_fingerprint(rng.normal(size=(200, K)) + centre, np.eye(K), 1e-3)


def uniform_predictions() -> np.ndarray:
    return np.full((Q, C), 1.0 / C)


def group_reports(
    rng: np.random.Generator,
    groups: dict[str, int],
    predict: Callable[[str], np.ndarray] | None = None,
) -> dict[str, ProbeResult]:
    """Devices ``<prefix><i>`` (4 per prefix) with fingerprints of their prefix's group and
    ``predict(device)`` probe predictions (uniform by default)."""
    return {
        f"{prefix}{i}": ProbeResult(
            predict(f"{prefix}{i}") if predict else uniform_predictions(), fingerprint(rng, group)
        )
        for prefix, group in groups.items()
        for i in range(4)
    }


def observe_groups(plane: ControlPlane, rng: np.random.Generator, groups: dict[str, int]) -> dict[str, int]:
    """One round of :func:`group_reports`; returns the clusters after it."""
    seen = plane.observe(group_reports(rng, groups))
    assert seen.reclustered
    return seen.clusters


def members(clusters: dict[str, int], prefix: str) -> set[int]:
    return {cid for device, cid in clusters.items() if device.startswith(prefix)}


def predictions(rng: np.random.Generator, truth: np.ndarray, margin: float = 3.0) -> np.ndarray:
    """(Q x C) softmax predictions favouring ``truth`` by ``margin`` logits, plus device noise."""
    logits = rng.normal(scale=0.5, size=(Q, C))
    logits[np.arange(Q), truth] += margin
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


# --- fingerprint rounds and clustering ----------------------------------------------------------


def test_fingerprint_round_is_the_first_then_every_nth() -> None:
    every_3 = ControlPlane(config(recluster_every=3))
    assert [r for r in range(1, 11) if every_3.fingerprint_round(r)] == [1, 4, 7, 10]
    every_1 = ControlPlane(config())
    assert all(every_1.fingerprint_round(r) for r in range(1, 6))
    off = ControlPlane(config(clustering=False, recluster_every=3))
    assert not any(off.fingerprint_round(r) for r in range(1, 11))


def test_two_planted_groups_give_two_clusters_and_unknown_devices_are_in_cluster_0() -> None:
    plane = ControlPlane(config())
    assert plane.cluster_of("a0") == 0
    clusters = observe_groups(plane, np.random.default_rng(0), {"a": 0, "b": 1})
    assert len(members(clusters, "a")) == 1 and len(members(clusters, "b")) == 1
    # fresh ids start at 1: cluster 0 means "not fingerprinted yet"
    assert members(clusters, "a") | members(clusters, "b") == {1, 2}
    assert all(plane.cluster_of(d) == cid for d, cid in clusters.items())
    assert plane.cluster_of("never-seen") == 0


def test_one_fingerprint_or_none_does_not_recluster() -> None:
    plane = ControlPlane(config())
    rng = np.random.default_rng(1)
    seen = plane.observe({"a0": ProbeResult(uniform_predictions(), fingerprint(rng, 0))})
    assert not seen.reclustered and plane.clusters == {}
    seen = plane.observe({"a0": ProbeResult(uniform_predictions()), "a1": ProbeResult(uniform_predictions())})
    assert not seen.reclustered and plane.clusters == {}


def test_clustering_off_ignores_fingerprints() -> None:
    plane = ControlPlane(config(clustering=False))
    rng = np.random.default_rng(2)
    seen = plane.observe(group_reports(rng, {"a": 0, "b": 1}))
    assert not seen.reclustered and plane.clusters == {}
    assert plane.cluster_of("a0") == plane.cluster_of("b0") == 0


def test_ids_are_stable_when_membership_is_unchanged_or_relabelled() -> None:
    plane = ControlPlane(config())
    rng = np.random.default_rng(3)
    first = observe_groups(plane, rng, {"a": 0, "b": 1})
    # fresh fingerprints, same membership
    assert observe_groups(plane, rng, {"a": 0, "b": 1}) == first
    # the groups swap behaviours: still the same membership, so the same ids
    assert observe_groups(plane, rng, {"a": 1, "b": 0}) == first
    # a newcomer that sorts first joins group b: the clustering's raw label 0 is now b's group,
    # but b keeps its id and the newcomer inherits it
    reports = group_reports(rng, {"a": 0, "b": 1})
    reports["0new"] = ProbeResult(uniform_predictions(), fingerprint(rng, 1))
    clusters = plane.observe(reports).clusters
    assert {d: clusters[d] for d in first} == first
    assert clusters["0new"] == first["b0"]


def test_a_new_group_gets_a_fresh_id_and_retired_ids_are_never_reused() -> None:
    plane = ControlPlane(config())
    rng = np.random.default_rng(4)
    first = observe_groups(plane, rng, {"a": 0, "b": 1})
    ids_a, ids_b = members(first, "a"), members(first, "b")
    assert ids_a | ids_b == {1, 2}
    # a third group appears: it gets id 3, the others keep theirs
    third = observe_groups(plane, rng, {"a": 0, "b": 1, "c": 2})
    assert members(third, "a") == ids_a and members(third, "b") == ids_b and members(third, "c") == {3}

    plane = ControlPlane(config())
    first = observe_groups(plane, rng, {"a": 0, "b": 1})
    # b's devices come to behave like a's: one cluster, one of the two ids is retired
    merged = observe_groups(plane, rng, {"a": 0, "b": 0})
    (kept,) = set(merged.values())
    assert kept in {1, 2}
    # b splits off again: the part that does not keep the id gets a never-used one (3), not the
    # retired one
    split = observe_groups(plane, rng, {"a": 0, "b": 3})
    assert len(members(split, "a")) == 1 and len(members(split, "b")) == 1
    assert members(split, "a") | members(split, "b") == {kept, 3}
    assert plane.next_cluster_id == 4


# --- trust --------------------------------------------------------------------------------------


def test_a_disagreeing_device_is_quarantined_weighted_0_and_recovers_when_it_agrees() -> None:
    plane = ControlPlane(config())
    beta, tau = plane.config.control.trust_beta, plane.config.control.tau_min
    rng = np.random.default_rng(5)
    truth = rng.integers(0, C, size=Q)
    honest = [f"h{i}" for i in range(4)]

    def round_reports(liar_truth: np.ndarray) -> dict[str, ProbeResult]:
        out = {d: ProbeResult(predictions(rng, truth)) for d in honest}
        out["liar"] = ProbeResult(predictions(rng, liar_truth))
        return out

    previous = {d: 1.0 for d in [*honest, "liar"]}  # new devices start at trust 1
    quarantined_at = None
    for r in range(1, 7):
        seen = plane.observe(round_reports((truth + 1) % C))  # the liar predicts shifted labels
        for d, trust in seen.trust.items():  # the EMA of the evidence it reports
            assert trust == pytest.approx(beta * previous[d] + (1 - beta) * seen.evidence[d])
        previous = seen.trust
        assert all(seen.evidence[d] > 0.8 for d in honest), seen.evidence
        assert seen.evidence["liar"] < 0.3, seen.evidence
        assert all(seen.trust[d] >= tau for d in honest) and not set(honest) & set(seen.quarantined)
        if seen.trust["liar"] < tau and quarantined_at is None:
            quarantined_at = r
            assert seen.newly_quarantined == ["liar"]
        elif quarantined_at is not None:
            assert seen.newly_quarantined == []
    assert quarantined_at is not None and quarantined_at <= 4
    assert plane.quarantine == {"liar"}
    assert plane.weight("liar", 100) == 0.0
    assert plane.weight("h0", 100) == pytest.approx(100 * plane.trust["h0"])
    assert plane.weight("newcomer", 7) == 7.0  # no trust yet: the initial 1.0

    recovered_at = None
    for r in range(1, 9):
        seen = plane.observe(round_reports(truth))  # it agrees again
        assert seen.evidence["liar"] > 0.8
        if recovered_at is None and seen.trust["liar"] >= tau:
            recovered_at = r
            assert seen.recovered == ["liar"] and seen.quarantined == []
    assert recovered_at is not None and recovered_at <= 4
    assert plane.quarantine == set()
    assert plane.weight("liar", 100) == pytest.approx(100 * plane.trust["liar"])
    assert plane.weight("liar", 100) > 0


def test_a_device_that_did_not_report_keeps_its_trust() -> None:
    plane = ControlPlane(config())
    rng = np.random.default_rng(6)
    truth = rng.integers(0, C, size=Q)
    plane.observe({d: ProbeResult(predictions(rng, truth if d != "x" else (truth + 2) % C)) for d in "abcx"})
    before = plane.trust["x"]
    seen = plane.observe({d: ProbeResult(predictions(rng, truth)) for d in "abc"})
    assert "x" not in seen.evidence and seen.trust["x"] == before


def test_trust_disabled_weights_are_the_example_counts() -> None:
    plane = ControlPlane(config(trust=False))
    rng = np.random.default_rng(7)
    truth = rng.integers(0, C, size=Q)
    for _ in range(5):
        seen = plane.observe(
            {"a": ProbeResult(predictions(rng, truth)), "b": ProbeResult(predictions(rng, (truth + 1) % C))}
        )
        assert seen.evidence == {} and seen.quarantined == []
    assert plane.trust == {} and plane.quarantine == set()
    assert plane.weight("a", 12) == 12.0 and plane.weight("b", 5) == 5.0


# --- assignment ---------------------------------------------------------------------------------

MODEL = ModelProfile(num_blocks=6, cut_bytes=1e6, block_memory_bytes=100, base_memory_bytes=1000)


def link(cost_s: float, steps: int) -> LinkEstimate:
    """A link whose communication per edge round costs ``cost_s``: half round trips, half transfer."""
    rtt = cost_s / (4 * steps)
    throughput = 8 * MODEL.cut_bytes * steps / cost_s  # 4 cut tensors per step
    return LinkEstimate(rtt_s=rtt, throughput_bytes_per_s=throughput)


def profiles_from(costs: dict[str, dict[str, float]], steps: int) -> dict[str, DeviceProfile]:
    return {d: DeviceProfile(links={e: link(c, steps) for e, c in per.items()}) for d, per in costs.items()}


# Three clusters over two edges (capacity 4 each); seconds per device per edge round:
#   A = {a1, a2}: near 1, far 4     B = {b1, b2}: near 1, far 2     C = {c1}: near 3, far 3
# (near, far) loads: {A,B} | C = 4 | 3  <- optimum (bottleneck 4)
#                    {A,C} | B = 5 | 4,  {B,C} | A = 5 | 8,  A | {B,C} = 2 | 7,  C | {A,B} = 3 | 12
HAND_CLUSTERS = {"a1": 1, "a2": 1, "b1": 2, "b2": 2, "c1": 3}
HAND_COSTS = {
    "a1": {"near": 1.0, "far": 4.0},
    "a2": {"near": 1.0, "far": 4.0},
    "b1": {"near": 1.0, "far": 2.0},
    "b2": {"near": 1.0, "far": 2.0},
    "c1": {"near": 3.0, "far": 3.0},
}


def hand_plane(**control: Any) -> ControlPlane:
    plane = ControlPlane(config(**control))
    plane.restore({"clusters": HAND_CLUSTERS})
    return plane


def test_link_cost_is_the_round_trips_plus_the_four_cut_transfers() -> None:
    plane = ControlPlane(config())
    steps = plane.config.train.local_steps
    profile = DeviceProfile(links={"e": LinkEstimate(rtt_s=0.01, throughput_bytes_per_s=2e6)})
    # 4 cut tensors (activations and gradients, each way) x 1 MB x 5 steps / 2 MB/s = 10 s,
    # plus 2 x 5 x 10 ms
    assert plane.link_cost(profile, "e", MODEL) == pytest.approx(10.0 + 0.1)
    assert plane.link_cost(profile, "e", MODEL) == pytest.approx(comm_cost(4e6, steps, 0.01, 2e6))
    assert plane.link_cost(profile, "unmeasured", MODEL) == math.inf
    assert plane.link_cost(profiles_from(HAND_COSTS, steps)["a1"], "far", MODEL) == pytest.approx(4.0)


def test_latency_rule_places_atomic_clusters_on_the_hand_checked_optimum() -> None:
    plane = hand_plane()
    profiles = profiles_from(HAND_COSTS, plane.config.train.local_steps)
    got = plane.assign(sorted(HAND_CLUSTERS), {"near": 4, "far": 4}, profiles, MODEL)
    assert got == {"a1": "near", "a2": "near", "b1": "near", "b2": "near", "c1": "far"}
    assert plane.assignment == got


def test_latency_rule_keeps_a_cluster_whole_even_when_splitting_it_would_be_faster() -> None:
    # A = {a1..a4}: near 1, far 1.5 each; B = {b1}: 1 on both. Atomic: A near | B far = 4 | 1
    # (A far | B near = 6 | 1). Splitting A (3 near, a4 + b1 far = 3 | 2.5) would be faster.
    plane = ControlPlane(config())
    devices = ["a1", "a2", "a3", "a4", "b1"]
    plane.restore({"clusters": {**dict.fromkeys(devices[:4], 1), "b1": 2}})
    costs = {d: {"near": 1.0, "far": 1.5} for d in devices[:4]} | {"b1": {"near": 1.0, "far": 1.0}}
    got = plane.assign(
        devices, {"near": 8, "far": 8}, profiles_from(costs, plane.config.train.local_steps), MODEL
    )
    assert got == {"a1": "near", "a2": "near", "a3": "near", "a4": "near", "b1": "far"}


def test_latency_rule_splits_an_oversized_cluster_and_respects_capacity() -> None:
    plane = ControlPlane(config())
    devices = [f"d{i}" for i in range(5)]
    plane.restore({"clusters": dict.fromkeys(devices, 1)})
    costs = {d: {"e1": 1.0, "e2": 1.0} for d in devices}
    profiles = profiles_from(costs, plane.config.train.local_steps)
    got = plane.assign(devices, {"e1": 3, "e2": 3}, profiles, MODEL)
    assert set(got) == set(devices)
    counts = {e: sum(1 for v in got.values() if v == e) for e in ("e1", "e2")}
    assert counts["e1"] <= 3 and counts["e2"] <= 3 and sum(counts.values()) == 5


def test_capacity_none_means_the_configured_edge_capacity() -> None:
    # with 3 devices per edge, A and B no longer fit near together. Candidates:
    #   {A,C} | B = 5 | 4  <- optimum,  {B,C} | A = 5 | 8,  A | {B,C} = 2 | 7,  B | {A,C} = 2 | 11
    plane = hand_plane(edge_capacity=3)
    profiles = profiles_from(HAND_COSTS, plane.config.train.local_steps)
    got = plane.assign(sorted(HAND_CLUSTERS), {"near": None, "far": None}, profiles, MODEL)
    assert got == {"a1": "near", "a2": "near", "b1": "far", "b2": "far", "c1": "near"}
    # an edge's own capacity wins over the default
    got = plane.assign(sorted(HAND_CLUSTERS), {"near": 4, "far": None}, profiles, MODEL)
    assert got == {"a1": "near", "a2": "near", "b1": "near", "b2": "near", "c1": "far"}


def test_a_removed_edge_gets_its_devices_reassigned() -> None:
    plane = hand_plane()
    profiles = profiles_from(HAND_COSTS, plane.config.train.local_steps)
    first = plane.assign(sorted(HAND_CLUSTERS), {"near": 4, "far": 4}, profiles, MODEL)
    assert "near" in first.values()
    # "near" died: it is no longer passed in
    second = plane.assign(sorted(HAND_CLUSTERS), {"far": 8}, profiles, MODEL)
    assert second == dict.fromkeys(HAND_CLUSTERS, "far")
    assert plane.assignment == second


def test_latency_rule_without_link_measurements_spreads_in_name_order() -> None:
    plane = hand_plane()
    profiles = profiles_from(HAND_COSTS, plane.config.train.local_steps)
    del profiles["c1"]  # one device has not measured its links yet
    got = plane.assign(sorted(HAND_CLUSTERS), {"near": 4, "far": 4}, profiles, MODEL)
    # edges in name order (far, near), ceil(5 / 2) = 3 devices each, clusters ignored
    assert got == {"a1": "far", "a2": "far", "b1": "far", "b2": "near", "c1": "near"}
    assert (
        plane.assign(sorted(HAND_CLUSTERS), {"near": 4, "far": 4}, profiles_from(HAND_COSTS, 5), None) == got
    )


def test_balanced_rule_spreads_in_name_order_within_capacity() -> None:
    plane = ControlPlane(config(assignment="balanced"))
    devices = [f"d{i}" for i in range(6)]
    # 6 devices over 2 edges: 3 per edge in name order, but e1 holds only 2: d2 spills to e2
    got = plane.assign(list(reversed(devices)), {"e1": 2, "e2": 10}, {}, None)
    assert got == {"d0": "e1", "d1": "e1", "d2": "e2", "d3": "e2", "d4": "e2", "d5": "e2"}
    even = plane.assign(devices, {"e1": None, "e2": None}, {}, None)
    assert even == {"d0": "e1", "d1": "e1", "d2": "e1", "d3": "e2", "d4": "e2", "d5": "e2"}


def test_random_rule_respects_capacity_and_is_deterministic_per_seed() -> None:
    devices = [f"d{i:02d}" for i in range(12)]
    edges: dict[str, int | None] = {"e1": 5, "e2": 5, "e3": 2}

    def two_rounds(seed: int) -> list[dict[str, str]]:
        plane = ControlPlane(config(seed=seed, assignment="random"))
        return [plane.assign(devices, edges, {}, None) for _ in range(2)]

    runs = {seed: two_rounds(seed) for seed in range(4)}
    for rounds in runs.values():
        for got in rounds:
            assert set(got) == set(devices)
            for edge, capacity in edges.items():
                assert capacity is not None and sum(1 for e in got.values() if e == edge) <= capacity
    assert two_rounds(0) == runs[0] and two_rounds(3) == runs[3]
    assert len({json.dumps(r[0], sort_keys=True) for r in runs.values()}) > 1, "seeds change the draw"


# --- split planning -----------------------------------------------------------------------------

PLAN_MODEL = ModelProfile(num_blocks=8, cut_bytes=1e5, block_memory_bytes=100, base_memory_bytes=1000)


def test_a_device_with_less_memory_keeps_fewer_blocks() -> None:
    # an edge slower per block than the devices: each device keeps what its memory allows
    plane = ControlPlane(config(edge_speedup=0.5))
    links = {"e": LinkEstimate(0.01, 1e7)}
    strong = plane.plan(
        "strong", DeviceProfile(block_step_s=0.01, memory_bytes=None, links=links), PLAN_MODEL
    )
    # 1000 B base + 3 blocks of 100 B: a share of 3 = (h 2, t 1)
    weak = plane.plan("weak", DeviceProfile(block_step_s=0.01, memory_bytes=1300, links=links), PLAN_MODEL)
    assert strong == SplitParams(head_blocks=4, tail_blocks=3)  # L - 1 = 7 blocks
    assert weak == SplitParams(head_blocks=2, tail_blocks=1)
    assert plane.plans == {"strong": strong, "weak": weak}


def test_a_much_slower_device_keeps_fewer_blocks_than_a_much_faster_one() -> None:
    """DESIGN §2.2: step time = device compute(h+t) + edge compute(L-h-t) + transfer, with the
    edge's per-block time a property of the edge (10 ms here). Same memory (unlimited) and links;
    one device takes 1 µs per block (faster than the edge: it should keep L-1 blocks), the other
    1 s (slower: it should keep the minimum). Compute must make a difference."""
    plane = ControlPlane(config())
    links = {"e": LinkEstimate(0.01, 1e7)}
    fast = plane.plan("fast", DeviceProfile(block_step_s=1e-6, links=links), PLAN_MODEL, 0.01)
    slow = plane.plan("slow", DeviceProfile(block_step_s=1.0, links=links), PLAN_MODEL, 0.01)
    share = {n: p.head_blocks + p.tail_blocks for n, p in (("fast", fast), ("slow", slow))}
    assert share["slow"] < share["fast"], (fast, slow)


def test_infeasible_memory_is_a_config_error_naming_the_device() -> None:
    plane = ControlPlane(config())
    tiny = DeviceProfile(block_step_s=0.01, memory_bytes=1100, links={"e": LinkEstimate(0.01, 1e7)})
    with pytest.raises(ConfigError, match="phone-17"):
        plane.plan("phone-17", tiny, PLAN_MODEL)
    assert "phone-17" not in plane.plans


def test_static_split_or_missing_measurements_give_the_configured_cut() -> None:
    cut = SplitParams(head_blocks=2, tail_blocks=2)
    static = ControlPlane(
        parse_config(
            {
                "model": {"head_blocks": 2, "tail_blocks": 2},
                "control": {"dynamic_split": False, "edge_speedup": 0.5},
            }
        )
    )
    strong = DeviceProfile(block_step_s=0.01, memory_bytes=None, links={"e": LinkEstimate(0.01, 1e7)})
    assert static.plan("d", strong, PLAN_MODEL) == cut
    # even a budget that fits no dynamic cut: the configured cut is not re-planned
    assert static.plan("small", DeviceProfile(block_step_s=0.01, memory_bytes=1), PLAN_MODEL) == cut
    dynamic = ControlPlane(
        parse_config({"model": {"head_blocks": 2, "tail_blocks": 2}, "control": {"edge_speedup": 0.5}})
    )
    assert dynamic.plan("d", strong, PLAN_MODEL) == SplitParams(head_blocks=4, tail_blocks=3)
    assert dynamic.plan("unmeasured", None, PLAN_MODEL) == cut
    assert dynamic.plan("no-step", DeviceProfile(memory_bytes=10**9), PLAN_MODEL) == cut
    assert dynamic.plan("no-model", strong, None) == cut


# --- persistence --------------------------------------------------------------------------------


def test_snapshot_restore_round_trips_through_json() -> None:
    plane = ControlPlane(config())
    rng = np.random.default_rng(8)
    truth = rng.integers(0, C, size=Q)

    def predict(device: str) -> np.ndarray:
        return predictions(rng, (truth + 1) % C if device == "b3" else truth)

    for _ in range(4):
        plane.observe(group_reports(rng, {"a": 0, "b": 1}, predict))
    assert plane.quarantine == {"b3"}
    # b's devices come to behave like a's: one id is retired
    plane.observe(group_reports(rng, {"a": 0, "b": 0}, predict))
    (kept,) = set(plane.clusters.values())
    devices = sorted(plane.clusters)
    profiles = profiles_from({d: {"e1": 1.0, "e2": 2.0} for d in devices}, plane.config.train.local_steps)
    plane.assign(devices, {"e1": 4, "e2": 8}, profiles, MODEL)
    plane.plan(
        "a0", DeviceProfile(block_step_s=0.01, memory_bytes=1300, links=profiles["a0"].links), PLAN_MODEL
    )

    snap = plane.snapshot()
    restored = ControlPlane(config())
    restored.restore(json.loads(json.dumps(snap)))
    assert restored.snapshot() == snap
    assert restored.clusters == plane.clusters and restored.trust == plane.trust
    assert restored.quarantine == {"b3"} and restored.weight("b3", 10) == 0.0
    assert restored.weight("a1", 10) == plane.weight("a1", 10) > 0
    assert restored.assignment == plane.assignment and restored.plans == plane.plans
    assert restored.next_cluster_id == 3
    # the restored plane still never reuses the retired id
    split = restored.observe(group_reports(rng, {"a": 0, "b": 3}, predict)).clusters
    assert members(split, "a") | members(split, "b") == {kept, 3}


# --- the probe-report wire message --------------------------------------------------------------


def dirichlet_predictions(rows: int = Q, classes: int = C, seed: int = 9) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(classes), size=rows)


def test_probe_message_round_trips_through_the_wire() -> None:
    rng = np.random.default_rng(10)
    result = ProbeResult(dirichlet_predictions(), fingerprint(rng, 2))
    message = probe_message(result, "device-007", "run-1", 3)
    assert (message.node_id, message.run_id, message.round) == ("device-007", "run-1", 3)
    back = probe_result(decode(encode(message), ProbeReport), Q, K)
    np.testing.assert_allclose(back.predictions, result.predictions, atol=1e-6)
    assert back.predictions.dtype == np.float64 and back.predictions.shape == (Q, C)
    assert result.fingerprint is not None and back.fingerprint is not None
    np.testing.assert_allclose(back.fingerprint.mu, result.fingerprint.mu, rtol=1e-6)
    np.testing.assert_allclose(back.fingerprint.sigma, result.fingerprint.sigma, rtol=1e-6)
    assert back.fingerprint.num_probes == Q

    plain = probe_result(
        decode(encode(probe_message(ProbeResult(dirichlet_predictions()), "d", "r", 1)), ProbeReport), Q, K
    )
    assert plain.fingerprint is None


def _report(predictions_tensor: torch.Tensor, **fields: Any) -> ProbeReport:
    values: dict[str, Any] = {
        "node_id": "device-000",
        "run_id": "run-1",
        "round": 1,
        "predictions": to_payload(predictions_tensor, "fp32"),
        **fields,
    }
    return decode(encode(ProbeReport(**values)), ProbeReport)


def _preds(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _fp_payloads(mu: np.ndarray, sigma: np.ndarray) -> dict[str, Any]:
    return {"mu": to_payload(_preds(mu), "fp32"), "sigma": to_payload(_preds(sigma), "fp32")}


def _negative_row() -> np.ndarray:
    bad = dirichlet_predictions()
    bad[0] = [-0.1, 0.6, 0.25, 0.25]  # sums to 1
    return bad


BAD_PREDICTIONS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    # name: (predictions builder, a word of the error)
    "one probe short": (lambda: dirichlet_predictions(rows=Q - 1), "predictions"),
    "one probe too many": (lambda: dirichlet_predictions(rows=Q + 1), "predictions"),
    "a vector": (lambda: np.full(Q, 1.0 / Q), "predictions"),
    "one class": (lambda: np.ones((Q, 1)), "predictions"),
    "3-d": (lambda: dirichlet_predictions().reshape(Q, 2, 2), "predictions"),
    "negative entry": (_negative_row, ">= 0"),
    "rows sum to 1.01": (lambda: dirichlet_predictions() * 1.01, "sum to 1"),
    "rows sum to 0": (lambda: np.zeros((Q, C)), "sum to 1"),
}


def test_probe_result_accepts_well_formed_predictions() -> None:
    # fp32 rounding of rows that sum to 1 stays within the tolerance
    out = probe_result(_report(_preds(dirichlet_predictions())), Q, K)
    assert out.predictions.shape == (Q, C) and out.fingerprint is None


@pytest.mark.parametrize("case", sorted(BAD_PREDICTIONS))
def test_probe_result_rejects_malformed_predictions(case: str) -> None:
    build, word = BAD_PREDICTIONS[case]
    with pytest.raises(ConfigError, match=word):
        probe_result(_report(_preds(build())), Q, K)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_probe_result_rejects_non_finite_predictions(value: float) -> None:
    bad = dirichlet_predictions()
    bad[3, 1] = value
    with pytest.raises(ElsaError) as info:
        probe_result(_report(_preds(bad)), Q, K)
    assert info.value.http_status == 422


def test_probe_result_rejects_malformed_fingerprints() -> None:
    good = dirichlet_predictions()
    mu, sigma = np.zeros(K), np.eye(K)
    ok = probe_result(_report(_preds(good), **_fp_payloads(mu, sigma)), Q, K)
    assert ok.fingerprint is not None and ok.fingerprint.dim == K
    with pytest.raises(ConfigError, match="both"):
        probe_result(_report(_preds(good), mu=to_payload(_preds(mu), "fp32")), Q, K)
    with pytest.raises(ConfigError, match="both"):
        probe_result(_report(_preds(good), sigma=to_payload(_preds(sigma), "fp32")), Q, K)
    not_psd = np.eye(K)
    not_psd[0, 0] = -1.0
    bad_fingerprints = {
        "sigma of another size": (mu, np.eye(K + 1)),
        "sigma a vector": (mu, np.ones(K)),
        "mu a matrix": (np.zeros((K, 1)), sigma),
        "sigma not positive definite": (mu, not_psd),
    }
    for case, (bad_mu, bad_sigma) in bad_fingerprints.items():
        with pytest.raises(ConfigError):
            probe_result(_report(_preds(good), **_fp_payloads(bad_mu, bad_sigma)), Q, K)
        assert case
    nan_mu = mu.copy()
    nan_mu[0] = float("nan")
    with pytest.raises(ElsaError) as info:
        probe_result(_report(_preds(good), **_fp_payloads(nan_mu, sigma)), Q, K)
    assert info.value.http_status == 422

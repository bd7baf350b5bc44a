"""Latency-aware edge assignment (DESIGN §2.6)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elsa.assign import assign_clusters, bottleneck_s, comm_cost, edge_loads
from elsa.assign.latency import _greedy
from elsa.errors import ConfigError, UnavailableError
from elsa.params import AssignmentParams


def brute_force(
    clusters: dict[int, list[str]], edges: dict[str, int], cost: dict[tuple[str, str], float]
) -> tuple[float, float]:
    """The best (bottleneck, total) over every atomic, capacity-respecting assignment."""
    ids, names = sorted(clusters), sorted(edges)
    best = (math.inf, math.inf)
    for choice in itertools.product(names, repeat=len(ids)):
        used = dict.fromkeys(names, 0)
        loads = dict.fromkeys(names, 0.0)
        for cid, edge in zip(ids, choice, strict=True):
            used[edge] += len(clusters[cid])
            loads[edge] += sum(cost.get((d, edge), math.inf) for d in clusters[cid])
        if any(used[e] > edges[e] for e in names):
            continue
        key = (max(loads.values()), sum(loads.values()))
        best = min(best, key)
    return best


def check_valid(
    result: dict[str, str], clusters: dict[int, list[str]], edges: dict[str, int], atomic: bool = True
) -> None:
    assert set(result) == {d for members in clusters.values() for d in members}
    for edge, capacity in edges.items():
        assert sum(1 for e in result.values() if e == edge) <= capacity
    if atomic:
        for members in clusters.values():
            assert len({result[d] for d in members}) == 1


def test_comm_cost_hand_computed() -> None:
    # 1 MB per step x 5 steps at 1 MB/s = 5 s, plus 2 x 5 x 10 ms = 0.1 s
    assert comm_cost(1e6, 5, 0.01, 1e6) == pytest.approx(5.1)
    assert comm_cost(0.0, 3, 0.0, 1.0) == 0.0
    with pytest.raises(ConfigError):
        comm_cost(1e6, 5, 0.01, 0.0)
    with pytest.raises(ConfigError):
        comm_cost(1e6, -1, 0.01, 1.0)
    with pytest.raises(ConfigError):
        comm_cost(1e6, 1, -0.01, 1.0)


# Two edges, three clusters. "near" is fast for everybody but holds only 4 devices.
#   A (2 devices) costs 1 s/device on near, 4 on far; B (2) costs 1 / 2; C (1) costs 3 / 3.
# Candidates (near, far) with capacity near 4, far 4:
#   {A,B} near, C far: loads 4 | 3  -> bottleneck 4, total 7     <- optimum
#   {A,C} near, B far: loads 5 | 4  -> bottleneck 5
#   {B,C} near, A far: loads 5 | 8  -> 8
#   A near, {B,C} far: loads 2 | 7  -> 7
HAND_CLUSTERS = {0: ["a1", "a2"], 1: ["b1", "b2"], 2: ["c1"]}
HAND_COST = {
    **{(d, "near"): 1.0 for d in ("a1", "a2", "b1", "b2")},
    **{(d, "far"): 4.0 for d in ("a1", "a2")},
    **{(d, "far"): 2.0 for d in ("b1", "b2")},
    ("c1", "near"): 3.0,
    ("c1", "far"): 3.0,
}


def test_hand_computed_instance_picks_the_min_bottleneck_solution() -> None:
    edges = {"near": 4, "far": 4}
    result = assign_clusters(HAND_CLUSTERS, edges, HAND_COST)
    assert result == {"a1": "near", "a2": "near", "b1": "near", "b2": "near", "c1": "far"}
    assert edge_loads(result, HAND_COST) == {"near": 4.0, "far": 3.0}
    assert (bottleneck_s(result, HAND_COST), 7.0) == brute_force(HAND_CLUSTERS, edges, HAND_COST)


def test_ties_in_bottleneck_are_broken_by_total_cost() -> None:
    # x must go somewhere with load 10 (the bottleneck either way); y costs 1 on e1 and 5 on e2:
    # both placements of y keep the bottleneck at 10, so the cheaper total (y on e1) wins.
    clusters = {0: ["x"], 1: ["y"]}
    cost = {("x", "e1"): 10.0, ("x", "e2"): 10.0, ("y", "e1"): 1.0, ("y", "e2"): 5.0}
    result = assign_clusters(clusters, {"e1": 1, "e2": 1}, cost)
    assert result == {"x": "e2", "y": "e1"}
    # with room for both on e1 (loads 11 | 0) the split placement (10 | 1) still has the smaller bottleneck
    result = assign_clusters(clusters, {"e1": 2, "e2": 2}, cost)
    assert result == {"x": "e2", "y": "e1"}
    assert brute_force(clusters, {"e1": 2, "e2": 2}, cost) == (10.0, 11.0)
    assert (bottleneck_s(result, cost), sum(edge_loads(result, cost).values())) == (10.0, 11.0)


def test_removing_an_edge_moves_its_clusters() -> None:
    edges = {"near": 4, "far": 4, "spare": 4}
    cost = {**HAND_COST, **{(d, "spare"): 2.5 for members in HAND_CLUSTERS.values() for d in members}}
    before = assign_clusters(HAND_CLUSTERS, edges, cost)
    on_near = {d for d, e in before.items() if e == "near"}
    assert on_near
    after = assign_clusters(HAND_CLUSTERS, {"far": 4, "spare": 4}, cost)
    assert "near" not in after.values()
    check_valid(after, HAND_CLUSTERS, {"far": 4, "spare": 4})
    # a drained edge (capacity 0) is the same as a dead one
    assert assign_clusters(HAND_CLUSTERS, {"near": 0, "far": 4, "spare": 4}, cost) == after


def test_a_cluster_bigger_than_every_edge_is_split_by_preferred_edge() -> None:
    members = [f"d{i}" for i in range(6)]
    # d0..d2 are close to e1, d3..d5 to e2
    cost = {
        (d, e): (1.0 if (i < 3) == (e == "e1") else 5.0) for i, d in enumerate(members) for e in ("e1", "e2")
    }
    result = assign_clusters({0: members}, {"e1": 4, "e2": 4}, cost)
    check_valid(result, {0: members}, {"e1": 4, "e2": 4}, atomic=False)
    assert result == {d: ("e1" if i < 3 else "e2") for i, d in enumerate(members)}


def test_clusters_stay_atomic_unless_they_cannot_be_packed() -> None:
    clusters = {0: ["a", "b"], 1: ["c", "d"], 2: ["e", "f"]}
    cost = {(d, e): 1.0 for ms in clusters.values() for d in ms for e in ("e1", "e2", "e3")}
    atomic = assign_clusters(clusters, {"e1": 2, "e2": 2, "e3": 2}, cost)
    check_valid(atomic, clusters, {"e1": 2, "e2": 2, "e3": 2})
    # 6 devices, 6 slots, but no edge holds two clusters of 2 in 3+3: one cluster must be split
    packed = assign_clusters(clusters, {"e1": 3, "e2": 3}, cost)
    check_valid(packed, clusters, {"e1": 3, "e2": 3}, atomic=False)
    split = [cid for cid, ms in clusters.items() if len({packed[d] for d in ms}) > 1]
    assert len(split) == 1


def test_unreachable_pairs_are_never_used() -> None:
    clusters = {0: ["a"], 1: ["b"]}
    cost = {("a", "e1"): 1.0, ("b", "e1"): 1.0, ("b", "e2"): 100.0}  # a cannot reach e2
    result = assign_clusters(clusters, {"e1": 1, "e2": 1}, cost)
    assert result == {"a": "e1", "b": "e2"}
    with pytest.raises(UnavailableError):
        assign_clusters({0: ["a"]}, {"e2": 5}, cost)


def test_bad_input_and_impossible_instances() -> None:
    cost = {("a", "e1"): 1.0, ("b", "e1"): 1.0}
    with pytest.raises(UnavailableError):
        assign_clusters({0: ["a", "b"]}, {"e1": 1}, cost)
    with pytest.raises(UnavailableError):
        assign_clusters({0: ["a"]}, {}, cost)
    with pytest.raises(ConfigError):
        assign_clusters({0: ["a"], 1: ["a"]}, {"e1": 2}, cost)
    with pytest.raises(ConfigError):
        assign_clusters({0: ["a"]}, {"e1": -1}, cost)
    with pytest.raises(ConfigError):
        assign_clusters({0: ["a"]}, {"e1": 1}, {("a", "e1"): -1.0})
    with pytest.raises(ConfigError):
        assign_clusters({0: ["a"]}, {"e1": 1}, lambda d, e: float("nan"))
    assert assign_clusters({}, {"e1": 1}, cost) == {}


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    capacities=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    seed=st.integers(0, 10_000),
)
def test_matches_brute_force_on_small_instances(sizes: list[int], capacities: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    clusters = {c: [f"c{c}d{i}" for i in range(n)] for c, n in enumerate(sizes)}
    edges = {f"e{j}": cap for j, cap in enumerate(capacities)}
    cost = {(d, e): float(rng.integers(1, 20)) for ms in clusters.values() for d in ms for e in edges}
    best = brute_force(clusters, edges, cost)
    if math.isinf(best[0]):
        return  # not atomically packable: covered by the splitting tests
    result = assign_clusters(clusters, edges, cost)
    check_valid(result, clusters, edges)
    loads = edge_loads(result, cost)
    assert (max(loads.values()), sum(loads.values())) == pytest.approx(best)
    assert assign_clusters(clusters, edges, cost) == result  # deterministic


def test_latency_aware_beats_random_assignment() -> None:
    rng = np.random.default_rng(42)
    edges = {f"edge{j}": 8 for j in range(4)}
    clusters = {c: [f"c{c}d{i}" for i in range(int(rng.integers(2, 6)))] for c in range(6)}
    devices = [d for ms in clusters.values() for d in ms]
    rtt = {(d, e): float(rng.uniform(0.005, 0.2)) for d in devices for e in edges}
    throughput = {(d, e): float(rng.uniform(1e5, 1e7)) for d in devices for e in edges}
    cost = {key: comm_cost(2e5, 5, rtt[key], throughput[key]) for key in rtt}
    aware = bottleneck_s(assign_clusters(clusters, edges, cost), cost)
    random_bottlenecks: list[float] = []
    names = sorted(edges)
    while len(random_bottlenecks) < 200:
        choice = {c: names[int(rng.integers(len(names)))] for c in clusters}
        if any(sum(len(clusters[c]) for c in clusters if choice[c] == e) > edges[e] for e in names):
            continue
        random_bottlenecks.append(
            bottleneck_s({d: choice[c] for c, ms in clusters.items() for d in ms}, cost)
        )
    assert aware <= min(random_bottlenecks) + 1e-9
    assert aware < 0.7 * float(np.mean(random_bottlenecks))


def test_a_tiny_solver_budget_still_gives_a_valid_deterministic_assignment() -> None:
    rng = np.random.default_rng(5)
    clusters = {c: [f"c{c}d{i}" for i in range(int(rng.integers(1, 6)))] for c in range(16)}
    devices = [d for ms in clusters.values() for d in ms]
    edges = {f"e{j}": math.ceil(len(devices) / 6 * 1.3) for j in range(6)}
    cost = {(d, e): float(rng.uniform(0.1, 10.0)) for d in devices for e in edges}
    params = AssignmentParams(max_solver_nodes=1)
    result = assign_clusters(clusters, edges, cost, params)
    check_valid(result, clusters, edges)
    assert assign_clusters(clusters, edges, cost, params) == result
    assert bottleneck_s(assign_clusters(clusters, edges, cost), cost) <= bottleneck_s(result, cost) + 1e-9


def test_greedy_fallback_hand_computed() -> None:
    # items of sizes 2, 1, 1; edge 0 is cheap but holds 2 devices
    item_cost = np.array([[2.0, 6.0], [1.0, 3.0], [1.0, 3.0]])
    choice = _greedy(item_cost, np.array([2.0, 1.0, 1.0]), np.array([2, 4]))
    # the size-2 item goes first, to edge 0 (load 2 < 6); edge 0 is then full
    assert choice is not None
    assert choice.tolist() == [0, 1, 1]
    assert _greedy(item_cost, np.array([2.0, 1.0, 1.0]), np.array([1, 1])) is None

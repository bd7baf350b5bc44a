"""Latency-aware edge assignment (DESIGN §2.6).

Cost model. A device d on edge e spends, per edge round of ``steps`` split-training steps,

    comm_cost = cut_bytes_per_step × steps / throughput + 2 × steps × RTT      (seconds)

A cluster's cost on an edge is the sum over its devices, and an edge's *load* is the sum over the
clusters it hosts. The assignment minimises the slowest edge (the largest load, the bottleneck)
and, among assignments with that bottleneck, the total cost.

Constraints. Clusters are atomic: all devices of a cluster go to one edge. An edge hosts at most
``capacity`` devices. A cluster larger than every edge's capacity is split into sub-clusters of at
most the largest capacity; if the atomic clusters still cannot be packed, the largest remaining
(sub-)cluster is halved until they can. A dead or drained edge is simply not passed in (or given
capacity 0).

Solver. Minimising a bottleneck of *sums* under capacities is a generalised assignment problem,
so a plain ``linear_sum_assignment`` over capacity slots would only solve a relaxation. We solve
it exactly as a small mixed-integer program (``scipy.optimize.milp``, HiGHS) in two stages: (1)
minimise the bottleneck T; (2) minimise the total cost subject to every load <= T (+ tie
tolerance). Instances are small (K_max clusters × a few edges), and the result is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import Bounds, LinearConstraint, milp

from elsa.errors import ConfigError, UnavailableError
from elsa.params import AssignmentParams

DeviceT = TypeVar("DeviceT", bound=str)
EdgeT = TypeVar("EdgeT", bound=str)
FloatArray = npt.NDArray[np.float64]

CostModel = Callable[[DeviceT, EdgeT], float] | Mapping[tuple[DeviceT, EdgeT], float]


def comm_cost(cut_bytes_per_step: float, steps: int, rtt_s: float, throughput_bytes_per_s: float) -> float:
    """Estimated communication time (s) of one device for one edge round (DESIGN §2.6).

    ``cut_bytes_per_step``: bytes the device's link carries per split step (all cut tensors);
    ``steps``: split steps per edge round (τ1); ``rtt_s``: round-trip time to the edge;
    ``throughput_bytes_per_s``: measured throughput to the edge (> 0). Returns
    ``cut_bytes_per_step * steps / throughput_bytes_per_s + 2 * steps * rtt_s``.
    """
    if not (math.isfinite(cut_bytes_per_step) and cut_bytes_per_step >= 0):
        raise ConfigError(f"cut_bytes_per_step must be finite and >= 0, got {cut_bytes_per_step}")
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    if not (math.isfinite(rtt_s) and rtt_s >= 0):
        raise ConfigError(f"rtt_s must be finite and >= 0, got {rtt_s}")
    if not throughput_bytes_per_s > 0:
        raise ConfigError(f"throughput_bytes_per_s must be > 0, got {throughput_bytes_per_s}")
    return cut_bytes_per_step * steps / throughput_bytes_per_s + 2.0 * steps * rtt_s


def _cost_fn(cost: CostModel[DeviceT, EdgeT]) -> Callable[[DeviceT, EdgeT], float]:
    if isinstance(cost, Mapping):
        table = cost
        return lambda d, e: float(table.get((d, e), math.inf))
    return cost


def _cost_table(
    devices: Sequence[DeviceT], edges: Sequence[EdgeT], cost: CostModel[DeviceT, EdgeT]
) -> FloatArray:
    """(D x E) float64 costs; +inf marks an unreachable pair; ConfigError on NaN / negative."""
    fn = _cost_fn(cost)
    table = np.array([[float(fn(d, e)) for e in edges] for d in devices], dtype=np.float64)
    if table.size and (np.any(np.isnan(table)) or np.any(table < 0)):
        raise ConfigError("assignment costs must be >= 0 (use inf for an unreachable edge)")
    return table.reshape(len(devices), len(edges))


def edge_loads(assignment: Mapping[DeviceT, EdgeT], cost: CostModel[DeviceT, EdgeT]) -> dict[EdgeT, float]:
    """Load (s) of every edge used by ``assignment``: the sum of its devices' costs."""
    fn = _cost_fn(cost)
    loads: dict[EdgeT, float] = {}
    for device in sorted(assignment):
        edge = assignment[device]
        loads[edge] = loads.get(edge, 0.0) + float(fn(device, edge))
    return loads


def bottleneck_s(assignment: Mapping[DeviceT, EdgeT], cost: CostModel[DeviceT, EdgeT]) -> float:
    """The slowest edge's load (s) under ``assignment`` (0.0 for an empty assignment)."""
    return max(edge_loads(assignment, cost).values(), default=0.0)


def _chunks(members: list[int], parts: int) -> list[list[int]]:
    """``members`` cut into ``parts`` contiguous pieces whose sizes differ by at most one."""
    size, extra = divmod(len(members), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(members[start:stop])
        start = stop
    return out


_MILP_INFEASIBLE = 2  # scipy.optimize.milp status: problem proven infeasible


def _greedy(
    item_cost: FloatArray, sizes: FloatArray, capacity: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64] | None:
    """Largest item first onto the edge with the smallest resulting load (fallback; may fail)."""
    n_items, n_edges = item_cost.shape
    loads = np.zeros(n_edges)
    free = capacity.astype(np.float64).copy()
    choice = np.full(n_items, -1, dtype=np.int64)
    for i in sorted(range(n_items), key=lambda i: (-sizes[i], i)):
        options = [e for e in range(n_edges) if np.isfinite(item_cost[i, e]) and sizes[i] <= free[e]]
        if not options:
            return None
        best = min(options, key=lambda e: (loads[e] + item_cost[i, e], item_cost[i, e], e))
        choice[i] = best
        loads[best] += item_cost[i, best]
        free[best] -= sizes[i]
    return choice


def _solve(
    items: list[list[int]], table: FloatArray, capacity: npt.NDArray[np.int64], params: AssignmentParams
) -> npt.NDArray[np.int64] | None:
    """Edge index per item minimising (bottleneck, total), or None when it cannot be packed."""
    n_items, n_edges = len(items), table.shape[1]
    item_cost = np.stack([table[members].sum(axis=0) for members in items])  # (I x E)
    sizes = np.array([len(m) for m in items], dtype=np.float64)
    allowed = np.isfinite(item_cost) & (sizes[:, np.newaxis] <= capacity[np.newaxis, :])
    if not np.all(allowed.any(axis=1)):
        return None
    finite = item_cost[np.isfinite(item_cost)]
    scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    c = np.where(allowed, item_cost / scale, 0.0)
    n_x = n_items * n_edges
    # variables: x[i, e] (row-major), then the bottleneck T
    assign_rows = np.zeros((n_items, n_x + 1))
    for i in range(n_items):
        assign_rows[i, i * n_edges : (i + 1) * n_edges] = 1.0
    cap_rows = np.zeros((n_edges, n_x + 1))
    load_rows = np.zeros((n_edges, n_x + 1))
    for e in range(n_edges):
        cap_rows[e, e:n_x:n_edges] = sizes
        load_rows[e, e:n_x:n_edges] = c[:, e]
        load_rows[e, n_x] = -1.0
    constraints = [
        LinearConstraint(assign_rows, 1.0, 1.0),
        LinearConstraint(cap_rows, -np.inf, capacity.astype(np.float64)),
        LinearConstraint(load_rows, -np.inf, 0.0),
    ]
    upper = np.append(allowed.reshape(-1).astype(np.float64), np.inf)
    integrality = np.append(np.ones(n_x), 0.0)
    options = {"mip_rel_gap": 0.0, "node_limit": params.max_solver_nodes, "disp": False}
    stage1 = milp(
        np.append(np.zeros(n_x), 1.0),
        constraints=constraints,
        bounds=Bounds(np.zeros(n_x + 1), upper),
        integrality=integrality,
        options=options,
    )
    if stage1.x is None:
        if stage1.status == _MILP_INFEASIBLE:
            return None
        return _greedy(np.where(allowed, item_cost, np.inf), sizes, capacity)
    upper[n_x] = float(stage1.x[n_x]) * (1.0 + params.tie_rel_tol) + 1e-9
    stage2 = milp(
        np.append(c.reshape(-1), 0.0),
        constraints=constraints,
        bounds=Bounds(np.zeros(n_x + 1), upper),
        integrality=integrality,
        options=options,
    )
    solution = stage2.x if stage2.x is not None else stage1.x
    x = np.rint(solution[:n_x]).reshape(n_items, n_edges)
    return np.asarray(np.argmax(x, axis=1), dtype=np.int64)


def assign_clusters(
    clusters: Mapping[int, Sequence[DeviceT]],
    edges: Mapping[EdgeT, int],
    cost: CostModel[DeviceT, EdgeT],
    params: AssignmentParams | None = None,
) -> dict[DeviceT, EdgeT]:
    """Assign every device to an edge, cluster by cluster (DESIGN §2.6; module docstring).

    ``clusters``: cluster id → its devices (each device in one cluster); ``edges``: live edge →
    free capacity in devices (>= 0); ``cost``: device, edge → seconds per edge round (e.g. from
    :func:`comm_cost`), as a callable or a mapping; +inf or a missing mapping entry means the
    device cannot reach that edge. Returns device → edge for every device, minimising the
    bottleneck edge load, then the total cost; deterministic. Oversized clusters are split into
    sub-clusters of devices that prefer the same edges. Raises ConfigError on malformed input and
    UnavailableError when the devices cannot be placed (no edge, too little capacity, or a device
    that reaches no edge with room). Inputs are not mutated.
    """
    params = params or AssignmentParams()
    edge_list = sorted(edges)
    capacity = np.array([int(edges[e]) for e in edge_list], dtype=np.int64)
    if np.any(capacity < 0):
        raise ConfigError("edge capacities must be >= 0")
    device_cluster: dict[DeviceT, int] = {}
    for cid in sorted(clusters):
        for device in clusters[cid]:
            if device in device_cluster:
                raise ConfigError(f"device {device!r} is in clusters {device_cluster[device]} and {cid}")
            device_cluster[device] = cid
    devices = sorted(device_cluster)
    if not devices:
        return {}
    if not edge_list or int(capacity.sum()) < len(devices):
        raise UnavailableError(
            f"{len(devices)} devices but the live edges have {int(capacity.sum())} free slots"
        )
    table = _cost_table(devices, edge_list, cost)
    unreachable = [devices[i] for i in range(len(devices)) if not np.isfinite(table[i]).any()]
    if unreachable:
        raise UnavailableError(f"devices reach no live edge: {unreachable[:3]}")
    index = {d: i for i, d in enumerate(devices)}
    # devices ordered by preferred edge, then cost there: sub-clusters keep devices that agree
    preferred = np.argmin(table, axis=1)
    largest = int(capacity.max())
    items: list[list[int]] = []
    for cid in sorted(clusters):
        members = sorted(
            (index[d] for d in clusters[cid]),
            key=lambda i: (int(preferred[i]), float(table[i, preferred[i]]), i),
        )
        if members:
            items.extend(_chunks(members, math.ceil(len(members) / largest)))
    while True:
        choice = _solve(items, table, capacity, params)
        if choice is not None:
            break
        splittable = [i for i, m in enumerate(items) if len(m) > 1]
        if not splittable:
            raise UnavailableError("devices cannot be placed on the live edges within their capacities")
        biggest = max(splittable, key=lambda i: (len(items[i]), -i))
        items[biggest : biggest + 1] = _chunks(items[biggest], 2)
    return {devices[i]: edge_list[int(choice[k])] for k, members in enumerate(items) for i in members}

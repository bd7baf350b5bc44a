"""Latency-aware edge assignment and resource-aware split planning (DESIGN §2.2, §2.6)."""

from elsa.assign.latency import (
    CostModel,
    assign_clusters,
    bottleneck_s,
    comm_cost,
    edge_loads,
)
from elsa.assign.split_plan import estimate_step_s, plan_split

__all__ = [
    "CostModel",
    "assign_clusters",
    "bottleneck_s",
    "comm_cost",
    "edge_loads",
    "estimate_step_s",
    "plan_split",
]

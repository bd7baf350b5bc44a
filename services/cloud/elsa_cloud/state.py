"""The cloud's in-process state: the task board (long-poll) and pending edge uploads."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import torch

from elsa.infra.cache import ExpiringCache
from elsa.infra.live import LiveStore
from elsa.infra.records import NodeRecord
from elsa.infra.sql import SqlStore
from elsa.model.split import SplitModel
from elsa.runtime.control import ControlPlane, ProbeResult
from elsa.runtime.privacy import RunPrivacy
from elsa.sketch import SketchedState
from elsa.wire.control import Task
from elsa_cloud.metrics import CloudMetrics


@dataclass
class TaskBoard:
    """The current task of every node, with a sequence number nodes long-poll past.

    Sequence numbers start from the wall clock in milliseconds so that, after a restart, new
    tasks still compare greater than what nodes saw before.
    """

    tasks: dict[str, tuple[int, Task]] = field(default_factory=dict)
    _seq: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    def post(self, node_id: str, task: Task) -> int:
        """Give ``node_id`` a new task; returns its sequence number."""
        self._seq += 1
        self.tasks[node_id] = (self._seq, task)
        return self._seq

    def newer_than(self, node_id: str, after: int) -> tuple[int, Task] | None:
        """The node's task if its sequence number is greater than ``after``."""
        entry = self.tasks.get(node_id)
        return entry if entry is not None and entry[0] > after else None


#: how long the cloud reuses a token → node lookup before asking SQL again
NODE_CACHE_TTL_S = 30.0


def node_cache() -> ExpiringCache[NodeRecord]:
    """Token hash → node record, so authenticated polls and heartbeats skip SQL (a rejoin or a
    resource report evicts the node's entries at once)."""
    return ExpiringCache(NODE_CACHE_TTL_S, capacity=100_000)


@dataclass
class CloudState:
    """Stores, the task board, coordinators and the uploads of rounds in progress."""

    store: SqlStore
    live: LiveStore
    metrics: CloudMetrics = field(default_factory=CloudMetrics)
    nodes: ExpiringCache[NodeRecord] = field(default_factory=node_cache)
    board: TaskBoard = field(default_factory=TaskBoard)
    coordinators: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: (run, round) -> edge id -> (its sketched model delta, its aggregation weight)
    uploads: dict[tuple[str, int], dict[str, tuple[SketchedState, float]]] = field(default_factory=dict)
    #: run id -> (its model with the initial adapter, its SS-OP subspaces), loaded on first use
    models: dict[str, tuple[SplitModel, RunPrivacy]] = field(default_factory=dict)
    adapter_cache: dict[tuple[str, int], dict[str, torch.Tensor]] = field(default_factory=dict)
    controls: dict[str, ControlPlane] = field(default_factory=dict)  # run id -> its control plane
    #: (run, round) -> device name -> probe report, collected while the round runs
    probes: dict[tuple[str, int], dict[str, ProbeResult]] = field(default_factory=dict)

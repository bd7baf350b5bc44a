"""Immutable records returned by the SQL store (DESIGN §5).

The store never hands out ORM rows: every read returns one of these frozen dataclasses, built
inside the transaction that read it. Mapping fields (``config``, ``resources``, ``payload``) are
fresh copies decoded from JSON; mutating them changes nothing in the store. Timestamps are
timezone-aware UTC :class:`~datetime.datetime` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

Role = Literal["edge", "device"]
RunState = Literal["created", "running", "paused", "stopped", "completed", "failed"]
RoundState = Literal["training", "aggregating", "completed", "abandoned"]
SnapshotKind = Literal["trust", "clusters", "assignment", "split_plan"]

ROLES: Final[frozenset[str]] = frozenset({"edge", "device"})
RUN_STATES: Final[frozenset[str]] = frozenset(
    {"created", "running", "paused", "stopped", "completed", "failed"}
)
ROUND_STATES: Final[frozenset[str]] = frozenset({"training", "aggregating", "completed", "abandoned"})
SNAPSHOT_KINDS: Final[frozenset[str]] = frozenset({"trust", "clusters", "assignment", "split_plan"})


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A registered edge or device (DESIGN §2.1).

    ``resources`` is the last resource report of the node (``{}`` until it reports).
    """

    node_id: str
    role: Role
    name: str
    url: str | None
    capacity: int | None
    token_hash: str
    joined_at: datetime
    resources: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A fine-tuning run; ``current_round`` is 0 before the first round starts."""

    run_id: str
    name: str
    state: RunState
    config: dict[str, Any]
    cloud_rounds: int
    current_round: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """One cloud round of a run and where it stands in its state machine.

    ``finished_at`` is set when the round reaches ``completed`` or ``abandoned`` and cleared when an
    abandoned round is restarted.
    """

    run_id: str
    round: int
    state: RoundState
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ParticipationRecord:
    """One participation event of a node in a round (joined, submitted, rejected, timed_out, ...)."""

    run_id: str
    round: int
    node_id: str
    role: Role
    status: str
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class MetricRecord:
    """One named metric a node reported for a round (``value`` is finite)."""

    run_id: str
    round: int
    node_id: str
    name: str
    value: float
    at: datetime


@dataclass(frozen=True, slots=True)
class AdapterVersionRecord:
    """A global adapter version: the blob lives at ``path``; SQL keeps its checksum and size."""

    run_id: str
    version: int
    round: int
    path: str
    sha256: str
    nbytes: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A per-round snapshot of Redis-held state (trust, clusters, assignment, split plans)."""

    run_id: str
    round: int
    kind: SnapshotKind
    payload: dict[str, Any]
    at: datetime

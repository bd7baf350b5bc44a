"""The edge's in-memory state: loaded models per run, the current round, session tokens."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from elsa.infra.cache import ExpiringCache
from elsa.model.adapters import AdapterState
from elsa.model.split import SplitModel
from elsa.params import SplitParams
from elsa.runtime.config import RunConfig
from elsa.runtime.exchange import DeltaSender
from elsa.runtime.rounds import EdgeRound
from elsa.wire.control import NodeIdentity
from elsa_edge.metrics import EdgeMetrics


@dataclass
class Session:
    """A device's split session for one round."""

    session_id: str
    device_id: str
    run_id: str
    round_index: int
    token_hash: str
    pending: tuple[int, tuple[int, ...]] | None = None  # step and shape of the forward awaiting backward


@dataclass
class ServedRound:
    """What this edge serves for one cloud round of a run."""

    config: RunConfig
    model: SplitModel
    edge_round: EdgeRound
    tokens: dict[str, str]  # device id -> session token hash
    opened_at: float
    uploaded: bool = False
    upload_failed: bool = False  # the cloud refused the edge model (not retried)
    first_submit_at: dict[int, float] = field(default_factory=dict)
    splits: dict[str, SplitParams] = field(default_factory=dict)  # device id -> its cut
    version: int = 0  # the global adapter version the round started from

    def split_of(self, device_id: str) -> SplitParams:
        """The device's cut this round (the run's default when the cloud planned none)."""
        return self.splits.get(device_id, self.config.split_params())

    def device_keys(self, device_id: str) -> list[str]:
        """The head/tail adapter keys a device with its cut trains."""
        return list(self.model.segments(self.split_of(device_id)).device_keys())


#: how long an edge trusts the cloud's answer about a token
IDENTITY_TTL_S = 300.0


def identity_cache() -> ExpiringCache[NodeIdentity]:
    """Token hash → the node holding it, as the cloud said."""
    return ExpiringCache(IDENTITY_TTL_S, capacity=10_000)


@dataclass
class EdgeState:
    """Everything the edge holds. One lock serialises model execution: segments swap adapter
    tensors into shared modules, so two forwards must not interleave."""

    node_id: str | None = None
    models: dict[str, SplitModel] = field(default_factory=dict)
    rounds: dict[str, ServedRound] = field(default_factory=dict)  # run id -> current round
    previous: dict[str, ServedRound] = field(default_factory=dict)  # run id -> the round before
    sessions: dict[str, Session] = field(default_factory=dict)
    #: run id -> (latest global version held, its full adapter), for the cloud's sketched deltas
    globals: dict[str, tuple[int, AdapterState]] = field(default_factory=dict)
    #: run id -> this edge's sketch sender (error feedback of its body deltas)
    senders: dict[str, DeltaSender] = field(default_factory=dict)
    compute_lock: threading.Lock = field(default_factory=threading.Lock)
    state_lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_in: int = 0
    bytes_out: int = 0
    last_error: str | None = None
    metrics: EdgeMetrics = field(default_factory=EdgeMetrics)
    identities: ExpiringCache[NodeIdentity] = field(default_factory=identity_cache)

    def count_in(self, kind: str, nbytes: int) -> None:
        """Bytes received (activations, gradients, adapters)."""
        self.bytes_in += nbytes
        self.metrics.bytes.labels("in", kind).inc(nbytes)

    def count_out(self, kind: str, nbytes: int) -> None:
        """Bytes sent (activations, gradients, adapters)."""
        self.bytes_out += nbytes
        self.metrics.bytes.labels("out", kind).inc(nbytes)

    def served(self, run_id: str, round_index: int) -> ServedRound | None:
        """The current or the previous round of a run (the previous one serves inference only:
        devices evaluate the edge model after the cloud has moved on)."""
        for table in (self.rounds, self.previous):
            served = table.get(run_id)
            if served is not None and served.edge_round.round_index == round_index:
                return served
        return None

    def is_current(self, served: ServedRound) -> bool:
        """Whether ``served`` is its run's current round."""
        return self.rounds.get(served.edge_round.run_id) is served

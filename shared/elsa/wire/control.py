"""JSON control-plane messages between devices, edges and the cloud (DESIGN §2.1, §5).

These travel as JSON over REST (the data plane — tensors — uses msgpack, see
:mod:`elsa.wire.messages`). Every model documents its fields: they are what Swagger UI shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["edge", "device"]
RunState = Literal["created", "running", "paused", "stopped", "completed", "failed"]
RoundState = Literal["training", "aggregating", "completed", "abandoned"]
TaskKind = Literal["idle", "train", "serve", "stop"]

_ID = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JoinRequest(_Model):
    """A node asks to join the network (DESIGN §2.1)."""

    join_secret: str = Field(min_length=1, max_length=512, description="shared join secret of the deployment")
    role: Role = Field(description="'edge' (serves split sessions) or 'device' (holds data, head and tail)")
    name: str = Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$", description="stable node name"
    )
    url: str | None = Field(
        None, max_length=512, description="base URL devices use to reach an edge (edges only)"
    )
    capacity: int | None = Field(None, ge=1, le=100_000, description="max concurrent devices an edge serves")
    memory_bytes: int | None = Field(None, ge=0, description="device memory budget for its segments")


class JoinResponse(_Model):
    """Credentials for a joined node."""

    node_id: str = Field(description="id of the node (stable per name and role)")
    token: str = Field(description="bearer token for every later call; shown once, stored hashed")


class LinkProbe(_Model):
    """A device's measurement of its link to one edge (DESIGN §2.1, §2.6)."""

    edge_id: str = _ID
    rtt_s: float = Field(ge=0, le=600, description="round-trip time of a small ping")
    throughput_bps: float = Field(gt=0, description="bytes per second of a payload ping")


class ModelFootprint(_Model):
    """What a device measured about a run's model, for split planning (DESIGN §2.2)."""

    run_id: str = _ID
    num_blocks: int = Field(ge=3, le=10_000, description="transformer blocks L")
    cut_bytes: float = Field(ge=0, description="wire bytes of one cut tensor per step")
    block_memory_bytes: int = Field(ge=0, description="training footprint of one block")
    base_memory_bytes: int = Field(ge=0, description="what the device needs whatever its cut")


class ResourceReport(_Model):
    """A device's resources and link probes."""

    memory_bytes: int | None = Field(None, ge=0)
    block_step_s: float | None = Field(None, ge=0, description="measured train-step seconds of one block")
    links: list[LinkProbe] = Field(default_factory=list, max_length=1024)
    model: ModelFootprint | None = Field(None, description="the current run's model as measured here")


class RunCreate(_Model):
    """Operator request to start a fine-tuning run; ``config`` is a RunConfig mapping."""

    config: dict[str, Any] = Field(description="run configuration (see configs/default.yaml)")


class RunView(_Model):
    """A run as operators see it."""

    run_id: str
    name: str
    state: RunState
    current_round: int
    cloud_rounds: int
    latest_version: int | None
    created_at: datetime
    config: dict[str, Any]


class RoundView(_Model):
    """One cloud round of a run."""

    run_id: str
    round: int
    state: RoundState
    started_at: datetime
    finished_at: datetime | None
    participants: int
    version: int | None


class NodeView(_Model):
    """A registered node."""

    node_id: str
    role: Role
    name: str
    url: str | None
    alive: bool
    joined_at: datetime


class TokenQuery(_Model):
    """A bearer token a node presented to an edge, for the cloud to identify (edges only)."""

    token: str = Field(min_length=1, max_length=512)


class NodeIdentity(_Model):
    """Who holds a token: the node's id, role and name."""

    node_id: str
    role: Role
    name: str


class Task(_Model):
    """What a node should do next (long-polled by devices and edges; DESIGN §2.1).

    * ``idle``: nothing yet, poll again.
    * ``serve`` (edge): serve split sessions of ``devices`` for ``round`` of ``run_id``.
    * ``train`` (device): train ``round`` against ``edge_url`` starting from ``version``.
    * ``stop``: the run ended; drop its state.
    """

    kind: TaskKind
    run_id: str | None = None
    round: int | None = None
    version: int | None = Field(None, description="global adapter version to start the round from")
    config: dict[str, Any] | None = Field(None, description="the run configuration")
    edge_id: str | None = None
    edge_url: str | None = None
    devices: list[str] = Field(default_factory=list, description="devices an edge serves this round")
    session_token: str | None = Field(
        None, description="device: bearer token for its split session on the edge"
    )
    session_token_hashes: dict[str, str] = Field(
        default_factory=dict, description="edge: sha256 of each served device's session token"
    )
    deadline_s: float | None = Field(None, description="seconds the round may take before it is closed")
    split: tuple[int, int] | None = Field(None, description="device: its cut (head_blocks, tail_blocks)")
    fingerprint: bool = Field(
        False, description="device: upload a fingerprint with this round's probe report"
    )
    clusters: dict[str, int] = Field(
        default_factory=dict, description="edge: cluster id of each served device"
    )
    trust: dict[str, float] = Field(
        default_factory=dict, description="edge: aggregation factor of each served device (0 = quarantined)"
    )
    splits: dict[str, tuple[int, int]] = Field(default_factory=dict, description="edge: each device's cut")
    subspace_digest: str | None = Field(
        None, description="device: digest of the SS-OP semantic subspace at its cut (null = SS-OP off)"
    )


class ControlView(_Model):
    """The control plane of a run as operators see it (DESIGN §2.3-§2.6)."""

    run_id: str
    round: int = Field(description="last cloud round whose reports updated this state")
    clusters: dict[str, int] = Field(description="device → cluster id")
    trust: dict[str, float] = Field(description="device → trust in [0, 1]")
    quarantined: list[str] = Field(description="devices below tau_min: weight 0, still training")
    assignment: dict[str, str] = Field(description="device → edge of the current round")
    split_plans: dict[str, tuple[int, int]] = Field(description="device → (head_blocks, tail_blocks)")


class MetricsReport(_Model):
    """A device's report at the end of a round: losses, local evaluation, bytes moved."""

    run_id: str = _ID
    round: int = Field(ge=0)
    metrics: dict[str, float] = Field(default_factory=dict, max_length=64)
    bytes: dict[str, int] = Field(default_factory=dict, max_length=64)


class Ack(_Model):
    """Generic acknowledgement."""

    ok: bool = True
    detail: str = ""


class Health(_Model):
    """Liveness/readiness answer."""

    status: Literal["ok", "degraded"]
    service: str
    node_id: str | None = None
    checks: dict[str, str] = Field(default_factory=dict)

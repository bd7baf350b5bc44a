"""Typed messages of ELSA's data plane and adapter exchange (DESIGN §2.7, §2.8, §2.9).

Every message is a frozen pydantic model with a class-level ``kind`` tag; the codec
(:mod:`elsa.wire.codec`) and the frame stream (:mod:`elsa.wire.frames`) put the tag next to the
body so the receiver knows which model validates it. Tensors travel as
:class:`~elsa.wire.tensors.TensorPayload`. Never pickle: a message is plain data.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from elsa.wire.tensors import TensorPayload

__all__ = [
    "MESSAGE_TYPES",
    "AdapterBroadcast",
    "AdapterUpdate",
    "BackwardRequest",
    "BackwardResponse",
    "ErrorMessage",
    "ForwardRequest",
    "ForwardResponse",
    "Message",
    "ProbeReport",
    "SketchPayload",
    "TensorName",
    "WireCount",
    "WireId",
]

MAX_ID_LENGTH: Final = 256
"""Longest id (session, node, run) accepted on the wire."""

MAX_TENSOR_NAME_LENGTH: Final = 512
"""Longest adapter tensor name accepted on the wire."""


WireId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
"""A non-empty id string of at most :data:`MAX_ID_LENGTH` characters."""

WireCount = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""A non-negative integer that fits msgpack's int64 (steps, rounds, versions, counts)."""

TensorName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TENSOR_NAME_LENGTH)]
"""A non-empty adapter tensor name of at most :data:`MAX_TENSOR_NAME_LENGTH` characters."""


class Message(BaseModel):
    """Base of every wire message: frozen, unknown fields rejected, tagged by ``kind``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClassVar[str]


class ForwardRequest(Message):
    """Device → edge: activations at the lower cut (after the device's head blocks, SS-OP
    perturbed) for one split-training step, with the attention mask the body needs."""

    kind: ClassVar[str] = "forward_request"

    session_id: WireId = Field(description="Split-training session of this device on this edge.")
    step: WireCount = Field(description="Training step within the session, from 0.")
    activations: TensorPayload = Field(
        description="Lower-cut hidden states, shape (batch, seq_len, hidden), floating wire dtype."
    )
    attention_mask: TensorPayload = Field(
        description="Attention mask, shape (batch, seq_len), int64/int32/uint8/bool, 1 = attend."
    )


class ForwardResponse(Message):
    """Edge → device: activations at the upper cut (output of the edge's body blocks)."""

    kind: ClassVar[str] = "forward_response"

    session_id: WireId = Field(description="Split-training session this answers.")
    step: WireCount = Field(description="Training step this answers, equal to the request's.")
    activations: TensorPayload = Field(
        description="Upper-cut hidden states, shape (batch, seq_len, hidden), floating wire dtype."
    )


class BackwardRequest(Message):
    """Device → edge: gradient of the loss with respect to the upper-cut activations."""

    kind: ClassVar[str] = "backward_request"

    session_id: WireId = Field(description="Split-training session of this device on this edge.")
    step: WireCount = Field(description="Training step whose forward pass this gradient belongs to.")
    grad: TensorPayload = Field(
        description="d loss / d upper-cut activations, shape (batch, seq_len, hidden), floating."
    )


class BackwardResponse(Message):
    """Edge → device: gradient at the lower cut, after the edge's body backward and LoRA step."""

    kind: ClassVar[str] = "backward_response"

    session_id: WireId = Field(description="Split-training session this answers.")
    step: WireCount = Field(description="Training step this answers, equal to the request's.")
    grad: TensorPayload = Field(
        description="d loss / d lower-cut activations, shape (batch, seq_len, hidden), floating."
    )


class SketchPayload(BaseModel):
    """One count sketch on the wire (DESIGN §3): the geometry that fixes its hashes and its table.

    Hashes and signs derive from (``seed``, ``round``, ``tensor``); ``rows`` x ``cols`` is the
    table, ``length`` the flattened tensor's element count; ``dense`` marks the exact identity
    table used for small tensors (and for every tensor when sketching is off). The receiver
    checks every field against the geometry it expects and refuses any other (409).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(ge=1, le=1024, description="Hash rows.")
    cols: int = Field(ge=1, le=2**40, description="Buckets per row.")
    length: int = Field(ge=1, le=2**40, description="Elements of the flattened tensor.")
    seed: int = Field(ge=-(2**63), le=2**64 - 1, description="Run seed of the hashes.")
    round: WireCount = Field(description="Round of the hashes.")
    tensor: TensorName = Field(description="Adapter key of the hashes.")
    dense: bool = Field(description="Exact identity table (rows = 1, cols = length).")
    table: TensorPayload = Field(description="The (rows, cols) table, floating.")


class AdapterUpdate(Message):
    """A device's or edge's adapter *delta* sent up for aggregation, as count sketches.

    ``sketches`` hold, per adapter key, the sketch of (trained − start), where start is the
    model the sender began this exchange from: for a device, the model its edge sent for this
    edge round (the global version of the cloud round for the first); for an edge, the global
    version the cloud round started from. Sketches of one round merge by weighted addition.
    """

    kind: ClassVar[str] = "adapter_update"

    node_id: WireId = Field(description="Node (device or edge) that trained this adapter.")
    run_id: WireId = Field(description="Fine-tuning run the adapter belongs to.")
    round: WireCount = Field(description="Cloud round the update is for, from 1.")
    num_examples: WireCount = Field(description="Training examples behind the update (aggregation weight).")
    sketches: dict[TensorName, SketchPayload] = Field(
        description="Sketched adapter deltas by name keyed by global block index, e.g. "
        "'blocks.3.attention.self.query.lora_A.weight'."
    )
    loss: float | None = Field(
        default=None, allow_inf_nan=False, description="Mean training loss over the round, if known."
    )
    weight: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Aggregation weight (trust x examples) when it differs from num_examples.",
    )

    @property
    def aggregation_weight(self) -> float:
        """``weight`` when given, else ``num_examples``."""
        return float(self.weight) if self.weight is not None else float(self.num_examples)


class AdapterBroadcast(Message):
    """Edge → devices or cloud → nodes: the aggregated adapter to continue training from.

    A key's value is ``tensors[key]`` when present, else the ``base_version`` global model's
    value plus the decoded ``sketches[key]`` (the merged sketch of the aggregated delta, which
    every receiver decodes exactly as the aggregator did). Keys in neither are unchanged.
    """

    kind: ClassVar[str] = "adapter_broadcast"

    run_id: WireId = Field(description="Fine-tuning run the adapter belongs to.")
    round: WireCount = Field(description="Round whose aggregation produced this adapter.")
    version: WireCount = Field(description="Adapter version, increasing within the run.")
    tensors: dict[TensorName, TensorPayload] = Field(
        default_factory=dict, description="Full adapter values by name keyed by global block index."
    )
    sketches: dict[TensorName, SketchPayload] = Field(
        default_factory=dict, description="Merged sketches of the deltas against ``base_version``."
    )
    base_version: WireCount | None = Field(
        default=None, description="Global version the sketched deltas apply to (0 = initial adapter)."
    )

    @model_validator(mode="after")
    def _sketches_need_a_base(self) -> AdapterBroadcast:
        if self.sketches and self.base_version is None:
            raise ValueError("sketched deltas need a base_version")
        if set(self.sketches) & set(self.tensors):
            raise ValueError("a key is either a full value or a sketched delta, not both")
        return self


class ProbeReport(Message):
    """Device → cloud after a round's local training: behaviour on the public probes (DESIGN §2.3).

    ``predictions`` (Q x C) every round, for trust; ``mu`` (k) and ``sigma`` (k x k) of the
    device's projected probe representations in fingerprint rounds, for clustering.
    """

    kind: ClassVar[str] = "probe_report"

    node_id: WireId = Field(description="Device that ran the probes.")
    run_id: WireId = Field(description="Fine-tuning run.")
    round: WireCount = Field(description="Cloud round the report is for.")
    predictions: TensorPayload = Field(description="Q x C probe prediction distributions.")
    mu: TensorPayload | None = Field(default=None, description="Fingerprint mean (k).")
    sigma: TensorPayload | None = Field(default=None, description="Fingerprint covariance + eps I (k x k).")


class ErrorMessage(Message):
    """An error sent in-band on a stream, shaped like the HTTP error body."""

    kind: ClassVar[str] = "error"

    error: str = Field(description="Stable machine-readable error code, e.g. 'bad_tensor'.")
    detail: str = Field(description="Human-readable explanation.")


MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.kind: cls
    for cls in (
        ForwardRequest,
        ForwardResponse,
        BackwardRequest,
        BackwardResponse,
        AdapterUpdate,
        AdapterBroadcast,
        ProbeReport,
        ErrorMessage,
    )
}
"""Every message type by its ``kind`` tag (read-only by convention)."""

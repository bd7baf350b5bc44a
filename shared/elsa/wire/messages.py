"""Typed messages of ELSA's data plane and adapter exchange (DESIGN §2.7, §2.8, §2.9).

Every message is a frozen pydantic model with a class-level ``kind`` tag; the codec
(:mod:`elsa.wire.codec`) and the frame stream (:mod:`elsa.wire.frames`) put the tag next to the
body so the receiver knows which model validates it. Tensors travel as
:class:`~elsa.wire.tensors.TensorPayload`. Never pickle: a message is plain data.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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


class AdapterUpdate(Message):
    """A device's or edge's LoRA adapter (or adapter delta) sent up for aggregation."""

    kind: ClassVar[str] = "adapter_update"

    node_id: WireId = Field(description="Node (device or edge) that trained this adapter.")
    run_id: WireId = Field(description="Fine-tuning run the adapter belongs to.")
    round: WireCount = Field(description="Edge or cloud round the update is for, from 0.")
    num_examples: WireCount = Field(description="Training examples behind the update (aggregation weight).")
    tensors: dict[TensorName, TensorPayload] = Field(
        description="Adapter tensors by name keyed by global block index, e.g. "
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
    """Edge → devices or cloud → edges: the aggregated adapter to continue training from."""

    kind: ClassVar[str] = "adapter_broadcast"

    run_id: WireId = Field(description="Fine-tuning run the adapter belongs to.")
    round: WireCount = Field(description="Round whose aggregation produced this adapter.")
    version: WireCount = Field(description="Adapter version, increasing within the run.")
    tensors: dict[TensorName, TensorPayload] = Field(
        description="Adapter tensors by name keyed by global block index."
    )


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

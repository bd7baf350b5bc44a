"""In-memory transport: the simulation runtime's implementation of the transport ports.

Every exchange is encoded to bytes with :mod:`elsa.wire` and decoded on the other side, exactly
as over HTTP, so the simulation exercises the real wire format (casts to the wire dtype, size
limits, validation) and counts the bytes that would have crossed the network.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch

from elsa.params import TransportParams
from elsa.wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    BackwardRequest,
    BackwardResponse,
    ForwardRequest,
    ForwardResponse,
    Message,
    decode,
    encode,
    from_payload,
    to_payload,
)

M = TypeVar("M", bound=Message)

#: byte-count kinds, per DESIGN §7.3
ACTIVATIONS = "activations"
INFERENCE = "inference_activations"
GRADIENTS = "gradients"
ADAPTERS_UP = "adapters_device_to_edge"
ADAPTERS_DOWN = "adapters_edge_to_device"
EDGE_TO_CLOUD = "adapters_edge_to_cloud"
CLOUD_TO_EDGE = "adapters_cloud_to_edge"
CLOUD_TO_DEVICE = "adapters_cloud_to_device"
PROBE_REPORTS = "probe_reports"


@dataclass
class ByteCounter:
    """Bytes that crossed each kind of link; reset per round by the caller."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, nbytes: int) -> None:
        """Record ``nbytes`` of ``kind``."""
        self.counts[kind] += nbytes

    def snapshot_and_reset(self) -> dict[str, int]:
        """The counts so far (as a plain dict), then zero them."""
        out = dict(self.counts)
        self.counts.clear()
        return out


class EdgeSessionPort(Protocol):
    """What the edge offers one split session (implemented by the edge node)."""

    def forward(self, step: int, lower: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def backward(self, step: int, upper_grad: torch.Tensor) -> torch.Tensor: ...


@dataclass
class InMemoryCutLink:
    """A device's :class:`~elsa.model.training.CutLink` to an in-process edge session.

    Tensors go through ``ForwardRequest``/``BackwardRequest`` messages encoded with the wire
    codec in the configured dtype, both ways; their encoded sizes are counted.
    """

    session_id: str
    edge: EdgeSessionPort
    transport: TransportParams
    counter: ByteCounter
    #: emulated link (simulation): every exchange costs one RTT plus its bytes / throughput
    rtt_s: float = 0.0
    throughput_bytes_per_s: float = float("inf")
    emulated_s: float = 0.0

    def _roundtrip(self, message: M, kind: str) -> M:
        data = encode(message)
        self.counter.add(kind, len(data))
        self.emulated_s += len(data) / self.throughput_bytes_per_s
        return decode(data, type(message), max_bytes=self.transport.max_message_bytes)

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Send lower-cut activations to the edge session, return its upper-cut activations."""
        dtype = self.transport.dtype
        request = ForwardRequest(
            session_id=self.session_id,
            step=max(step, 0),
            activations=to_payload(activations, dtype),
            attention_mask=to_payload(attention_mask.to(torch.uint8)),
        )
        kind = INFERENCE if step < 0 else ACTIVATIONS
        self.emulated_s += self.rtt_s
        got = self._roundtrip(request, kind)
        lower = from_payload(got.activations, dtype=torch.float32)
        mask = from_payload(got.attention_mask).to(torch.long)
        upper = self.edge.forward(step, lower, mask)
        response = ForwardResponse(
            session_id=self.session_id, step=max(step, 0), activations=to_payload(upper, dtype)
        )
        back = self._roundtrip(response, kind)
        return from_payload(back.activations, dtype=torch.float32)

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        """Send the upper-cut gradient, return the lower-cut gradient."""
        dtype = self.transport.dtype
        request = BackwardRequest(session_id=self.session_id, step=step, grad=to_payload(grad, dtype))
        self.emulated_s += self.rtt_s
        got = self._roundtrip(request, GRADIENTS)
        lower_grad = self.edge.backward(step, from_payload(got.grad, dtype=torch.float32))
        response = BackwardResponse(session_id=self.session_id, step=step, grad=to_payload(lower_grad, dtype))
        back = self._roundtrip(response, GRADIENTS)
        return from_payload(back.grad, dtype=torch.float32)


@dataclass
class LocalCutLink:
    """A :class:`~elsa.model.training.CutLink` for a device that holds the whole model (the
    ``strategy.split: false`` baselines): the body runs in the device's own process, so nothing
    is encoded, counted or delayed."""

    edge: EdgeSessionPort
    emulated_s: float = 0.0

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The body's output for the head's activations."""
        return self.edge.forward(step, activations, attention_mask)

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        """The gradient at the head's output."""
        return self.edge.backward(step, grad)


def ship(message: M, kind: str, counter: ByteCounter, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> M:
    """Send a message through the codec as over the network: encode, count its bytes under
    ``kind``, decode (with the same validation and size limit a service applies)."""
    data = encode(message)
    counter.add(kind, len(data))
    return decode(data, type(message), max_bytes=max_bytes)

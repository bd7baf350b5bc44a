"""ELSA's wire format (DESIGN §2.7): typed messages, msgpack codec, tensor payloads, frames.

Messages are frozen pydantic models; tensors travel as dtype + shape + raw bytes; nothing is
ever pickled and no msgpack ext type is used. :func:`encode`/:func:`decode` handle one message
as one msgpack document; :func:`encode_frames`/:class:`FrameDecoder` stream it as
length-prefixed frames with large tensor buffers outside msgpack. Every decoding failure is a
:class:`elsa.errors.WireError` (``DecodeError``, ``PayloadTooLargeError`` or ``TensorError``).
"""

from __future__ import annotations

from elsa.wire.codec import DEFAULT_MAX_MESSAGE_BYTES, decode, encode
from elsa.wire.envelope import WIRE_VERSION
from elsa.wire.frames import (
    DEFAULT_INLINE_LIMIT,
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    encode_frames,
    frames_nbytes,
    iter_messages,
)
from elsa.wire.messages import (
    MESSAGE_TYPES,
    AdapterBroadcast,
    AdapterUpdate,
    BackwardRequest,
    BackwardResponse,
    ErrorMessage,
    ForwardRequest,
    ForwardResponse,
    Message,
    ProbeReport,
    SketchPayload,
)
from elsa.wire.tensors import (
    TENSOR_DTYPES,
    TensorPayload,
    from_payload,
    payload_nbytes,
    payloads_to_state,
    state_to_payloads,
    to_payload,
)

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MESSAGE_TYPES",
    "TENSOR_DTYPES",
    "WIRE_VERSION",
    "AdapterBroadcast",
    "AdapterUpdate",
    "BackwardRequest",
    "BackwardResponse",
    "ErrorMessage",
    "ForwardRequest",
    "ForwardResponse",
    "FrameDecoder",
    "Message",
    "ProbeReport",
    "SketchPayload",
    "TensorPayload",
    "decode",
    "encode",
    "encode_frames",
    "frames_nbytes",
    "from_payload",
    "iter_messages",
    "payload_nbytes",
    "payloads_to_state",
    "state_to_payloads",
    "to_payload",
]

"""One-shot msgpack codec for ELSA messages (DESIGN §2.7).

``encode`` turns a message into one msgpack document ``{"k": kind, "v": 1, "b": body}`` with
tensors as ``{"dtype", "shape", "data": bin}``; ``decode`` reverses it for untrusted bytes and
raises only :class:`elsa.errors.WireError` subclasses. For multi-MB tensors prefer the frame
stream of :mod:`elsa.wire.frames`, which does not pack large buffers into msgpack.
"""

from __future__ import annotations

from typing import TypeVar, overload

from elsa.errors import PayloadTooLargeError
from elsa.wire.envelope import (
    DEFAULT_MAX_MESSAGE_BYTES,
    open_envelope,
    pack_message,
    unpack_envelope,
    validate_body,
)
from elsa.wire.messages import Message

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "decode", "encode"]

M = TypeVar("M", bound=Message)


def encode(msg: Message) -> bytes:
    """Encode ``msg`` as one msgpack document (tensor buffers inline as bin); ``msg`` is not mutated."""
    return pack_message(msg)


@overload
def decode(data: bytes | memoryview, expected: type[M], *, max_bytes: int = ...) -> M: ...


@overload
def decode(data: bytes | memoryview, expected: None = None, *, max_bytes: int = ...) -> Message: ...


def decode(
    data: bytes | memoryview,
    expected: type[Message] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Message:
    """Decode untrusted bytes produced by :func:`encode` into a validated message.

    With ``expected`` the message must be of exactly that type. Raises
    :class:`PayloadTooLargeError` when ``len(data) > max_bytes`` (before unpacking),
    :class:`DecodeError` for bad or truncated msgpack, trailing bytes, ext types, a wrong
    envelope, version or kind, or failed field validation, and :class:`TensorError` for an
    inconsistent tensor payload (dtype/shape/length). ``data`` is not mutated.
    """
    nbytes = memoryview(data).nbytes
    if nbytes > max_bytes:
        raise PayloadTooLargeError(f"message is {nbytes} bytes, limit is {max_bytes}")
    cls, body = open_envelope(unpack_envelope(data), expected)
    return validate_body(cls, body)

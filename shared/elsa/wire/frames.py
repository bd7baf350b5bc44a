"""Length-prefixed frame streaming for chunked HTTP and WebSocket (DESIGN §2.7, §2.7 step 7).

A *frame* is a 4-byte big-endian length followed by that many bytes. A message is one header
frame — the msgpack envelope of :mod:`elsa.wire.envelope` in which every tensor buffer larger
than ``inline_limit`` is replaced by ``{"$buf": i, "n": nbytes}`` — followed by one raw frame
per referenced buffer, in index order. A multi-MB cut tensor thus travels as a small msgpack
header plus its raw bytes: the sender never packs it into msgpack (it hands out a zero-copy view)
and the receiver copies each buffer once, from the received chunks into the payload's bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from elsa.errors import ConfigError, DecodeError, PayloadTooLargeError
from elsa.params import TransportParams
from elsa.wire.envelope import (
    DEFAULT_MAX_MESSAGE_BYTES,
    BufferRef,
    find_buffer_refs,
    open_envelope,
    pack_message,
    unpack_envelope,
    validate_body,
)
from elsa.wire.messages import Message

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_MAX_FRAME_BYTES",
    "PREFIX_BYTES",
    "FrameDecoder",
    "encode_frames",
    "frames_nbytes",
    "iter_messages",
]

PREFIX_BYTES: Final = 4
"""Size of the big-endian length prefix of every frame."""

MAX_FRAME_LENGTH: Final = 2**32 - 1
"""Largest frame body the 4-byte prefix can describe."""

DEFAULT_INLINE_LIMIT: Final = 64 * 1024
"""Tensor buffers longer than this travel as raw frames instead of inside the header."""

DEFAULT_MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
"""Default limit on one frame body (header or buffer)."""


def _prefix(nbytes: int) -> bytes:
    if nbytes > MAX_FRAME_LENGTH:
        raise PayloadTooLargeError(f"frame of {nbytes} bytes exceeds the 4-byte length prefix")
    return nbytes.to_bytes(PREFIX_BYTES, "big")


def encode_frames(msg: Message, *, inline_limit: int = DEFAULT_INLINE_LIMIT) -> list[bytes | memoryview]:
    """Encode ``msg`` as a frame stream: header frame, then one raw frame per large buffer.

    Returns the stream as pieces whose concatenation is the byte stream (write them in order):
    ``[prefix, header, prefix, buffer_0, prefix, buffer_1, ...]``. Each ``buffer_i`` is a
    zero-copy ``memoryview`` of a tensor's ``data``, so ``msg`` must stay alive until the pieces
    are written; ``msg`` is not mutated. Raises :class:`PayloadTooLargeError` for a frame over
    4 GiB - 1.
    """
    buffers: list[bytes] = []
    header = pack_message(msg, buffers, inline_limit)
    pieces: list[bytes | memoryview] = [_prefix(len(header)), header]
    for buffer in buffers:
        pieces.append(_prefix(len(buffer)))
        pieces.append(memoryview(buffer))
    return pieces


def frames_nbytes(frames: Sequence[bytes | memoryview]) -> int:
    """Total bytes of the stream pieces returned by :func:`encode_frames` (prefixes included)."""
    return sum(piece.nbytes if isinstance(piece, memoryview) else len(piece) for piece in frames)


def _immutable(chunk: bytes | bytearray | memoryview) -> bytes | memoryview:
    """The chunk itself if nobody can change it later (bytes or a byte view of bytes), else a copy."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, memoryview) and isinstance(chunk.obj, bytes) and chunk.c_contiguous:
        return chunk.cast("B")
    return bytes(chunk)


@dataclass
class _PendingMessage:
    """A parsed header frame waiting for its raw buffer frames."""

    cls: type[Message]
    body: dict[str, Any]
    refs: list[BufferRef]
    received: int = 0
    buffers: list[bytes] = field(default_factory=list)


class FrameDecoder:
    """Incremental decoder of a frame stream from untrusted chunks of any size.

    ``feed`` chunks in arrival order; it returns every message completed so far. Limits:
    a frame whose length prefix exceeds ``max_frame_bytes``, or a message whose frames
    (prefixes included) would exceed ``max_message_bytes``, raises
    :class:`PayloadTooLargeError` as soon as the prefix or header is read, before its bytes are
    buffered. Malformed input raises :class:`DecodeError` (or :class:`TensorError` for an
    inconsistent tensor). With ``expected`` every message must be of that type.

    Errors are final: after any error the decoder drops everything it buffered (including
    messages completed in the same ``feed`` call) and every later ``feed``/``finish`` raises
    :class:`DecodeError`. Use a new decoder per stream. Not thread-safe.
    """

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        expected: type[Message] | None = None,
    ) -> None:
        if max_frame_bytes <= 0 or max_message_bytes <= 0:
            raise ConfigError("max_frame_bytes and max_message_bytes must be > 0")
        self._max_frame_bytes = max_frame_bytes
        self._max_message_bytes = max_message_bytes
        self._expected = expected
        self._pieces: deque[bytes | memoryview] = deque()
        self._available = 0
        self._frame_length: int | None = None
        self._pending: _PendingMessage | None = None
        self._failure: str | None = None

    @classmethod
    def from_params(cls, params: TransportParams, expected: type[Message] | None = None) -> FrameDecoder:
        """A decoder whose frame and message limits are ``params.max_message_bytes``."""
        return cls(
            max_frame_bytes=params.max_message_bytes,
            max_message_bytes=params.max_message_bytes,
            expected=expected,
        )

    @property
    def idle(self) -> bool:
        """True when no partial frame or message is buffered (a clean place for the stream to end)."""
        return self._available == 0 and self._frame_length is None and self._pending is None

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Message]:
        """Consume the next chunk of the stream and return the messages it completed.

        ``chunk`` is not mutated. A ``bytes`` chunk (or a view of one) is kept without copying;
        any other buffer is copied first, so the caller may reuse it.
        """
        if self._failure is not None:
            raise DecodeError(f"frame stream already failed: {self._failure}")
        try:
            data = _immutable(chunk)
            if data:
                self._pieces.append(data)
                self._available += len(data)
            return self._drain()
        except Exception as exc:
            self._fail(exc)
            raise

    def finish(self) -> None:
        """Declare the end of the stream; raises :class:`DecodeError` if it stopped mid-message."""
        if self._failure is not None:
            raise DecodeError(f"frame stream already failed: {self._failure}")
        if not self.idle:
            error = DecodeError(f"stream ended inside a message ({self._available} bytes buffered)")
            self._fail(error)
            raise error

    def _fail(self, exc: Exception) -> None:
        self._failure = str(exc) or type(exc).__name__
        self._pieces.clear()
        self._available = 0
        self._frame_length = None
        self._pending = None

    def _drain(self) -> list[Message]:
        messages: list[Message] = []
        while True:
            if self._frame_length is None:
                if self._available < PREFIX_BYTES:
                    return messages
                self._frame_length = self._start_frame(int.from_bytes(self._take(PREFIX_BYTES), "big"))
            if self._available < self._frame_length:
                return messages
            body = self._take(self._frame_length)
            self._frame_length = None
            message = self._end_frame(body)
            if message is not None:
                messages.append(message)

    def _start_frame(self, length: int) -> int:
        """Check a frame's length prefix against the limits and the header's references."""
        if length > self._max_frame_bytes:
            raise PayloadTooLargeError(
                f"frame of {length} bytes exceeds the limit of {self._max_frame_bytes}"
            )
        pending = self._pending
        if pending is None:
            if PREFIX_BYTES + length > self._max_message_bytes:
                raise PayloadTooLargeError(
                    f"message header of {length} bytes exceeds the limit of {self._max_message_bytes}"
                )
        else:
            want = pending.refs[pending.received].nbytes
            if length != want:
                raise DecodeError(
                    f"buffer frame {pending.received} is {length} bytes, header announced {want}"
                )
        return length

    def _end_frame(self, body: bytes) -> Message | None:
        pending = self._pending
        if pending is None:
            return self._start_message(body)
        pending.buffers.append(body)
        pending.received += 1
        if pending.received < len(pending.refs):
            return None
        self._pending = None
        for ref, buffer in zip(pending.refs, pending.buffers, strict=True):
            ref.container[ref.key] = buffer
        return validate_body(pending.cls, pending.body)

    def _start_message(self, header: bytes) -> Message | None:
        cls, body = open_envelope(unpack_envelope(header), self._expected)
        refs = find_buffer_refs(body)
        total = PREFIX_BYTES + len(header)
        for ref in refs:
            if ref.nbytes > self._max_frame_bytes:
                raise PayloadTooLargeError(
                    f"buffer {ref.index} of {ref.nbytes} bytes exceeds the frame limit of {self._max_frame_bytes}"
                )
            total += PREFIX_BYTES + ref.nbytes
        if total > self._max_message_bytes:
            raise PayloadTooLargeError(
                f"message of {total} bytes exceeds the limit of {self._max_message_bytes}"
            )
        if not refs:
            return validate_body(cls, body)
        self._pending = _PendingMessage(cls, body, refs)
        return None

    def _take(self, nbytes: int) -> bytes:
        """Remove and return the next ``nbytes`` buffered bytes, copying at most once."""
        if nbytes == 0:
            return b""
        self._available -= nbytes
        first = self._pieces[0]
        if len(first) == nbytes:
            self._pieces.popleft()
            return first if isinstance(first, bytes) else bytes(first)
        if len(first) > nbytes:
            view = memoryview(first)
            self._pieces[0] = view[nbytes:]
            return bytes(view[:nbytes])
        parts: list[bytes | memoryview] = []
        missing = nbytes
        while missing:
            piece = self._pieces[0]
            if len(piece) <= missing:
                parts.append(self._pieces.popleft())
                missing -= len(piece)
            else:
                view = memoryview(piece)
                parts.append(view[:missing])
                self._pieces[0] = view[missing:]
                missing = 0
        return b"".join(parts)


async def iter_messages(chunks: AsyncIterable[bytes], decoder: FrameDecoder) -> AsyncIterator[Message]:
    """Yield the messages of a chunked byte stream as they complete.

    Feeds every chunk to ``decoder`` (mutating its state) and calls :meth:`FrameDecoder.finish`
    at the end, so a stream cut inside a message raises :class:`DecodeError`.
    """
    async for chunk in chunks:
        for message in decoder.feed(chunk):
            yield message
    decoder.finish()

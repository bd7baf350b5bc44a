"""The msgpack envelope shared by the one-shot codec and the frame stream (DESIGN §2.7).

On the wire a message is the msgpack map ``{"k": kind, "v": WIRE_VERSION, "b": body}``. The
body is the message's fields as plain msgpack values; a :class:`TensorPayload` is the map
``{"dtype": str, "shape": [int, ...], "data": bin}``. In a frame stream, a large ``data`` is
replaced by the reference ``{"$buf": i, "n": nbytes}`` and travels as raw frame ``i``.
No pickle and no ext types: unpacking rejects every ext type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack
from pydantic import BaseModel, ValidationError

from elsa.errors import DecodeError
from elsa.wire.messages import MESSAGE_TYPES, Message
from elsa.wire.tensors import TensorPayload

WIRE_VERSION: Final = 1
"""Version of the envelope and body layout; a receiver rejects any other value."""

DEFAULT_MAX_MESSAGE_BYTES: Final = 256 * 1024 * 1024
"""Default size limit of one encoded message (same as ``TransportParams.max_message_bytes``)."""

MAX_ARRAY_LEN: Final = 1024
"""Longest msgpack array accepted (shapes are the only arrays in a body)."""

MAX_MAP_LEN: Final = 1 << 16
"""Largest msgpack map accepted (e.g. the number of tensors of one adapter)."""

MAX_REF_DEPTH: Final = 4
"""How deep inside the body buffer references are searched: deep enough for the deepest tensor of
any message, a sketch table (body → ``sketches`` → name → sketch → ``table``); a message nesting
tensors deeper must raise this."""

BUF_KEY: Final = "$buf"
"""Key of a buffer reference in a frame-stream header."""


def _dump(value: object, buffers: list[bytes] | None, inline_limit: int) -> object:
    """Turn a field value into plain msgpack data; large tensor buffers go to ``buffers``."""
    if isinstance(value, TensorPayload):
        data: object = value.data
        if buffers is not None and len(value.data) > inline_limit:
            data = {BUF_KEY: len(buffers), "n": len(value.data)}
            buffers.append(value.data)
        return {"dtype": value.dtype, "shape": value.shape, "data": data}
    if isinstance(value, BaseModel):
        return {name: _dump(getattr(value, name), buffers, inline_limit) for name in type(value).model_fields}
    if isinstance(value, Mapping):
        return {key: _dump(item, buffers, inline_limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_dump(item, buffers, inline_limit) for item in value]
    return value


def pack_message(msg: Message, buffers: list[bytes] | None = None, inline_limit: int = 0) -> bytes:
    """msgpack-encode ``msg`` in its envelope.

    With ``buffers`` given, every tensor buffer longer than ``inline_limit`` bytes is appended
    to it (the same object, no copy) and replaced by a ``{"$buf": i, "n": nbytes}`` reference.
    ``msg`` is not mutated.
    """
    body = _dump(msg, buffers, inline_limit)
    envelope = {"k": msg.kind, "v": WIRE_VERSION, "b": body}
    packed: bytes = msgpack.packb(envelope, use_bin_type=True, datetime=False)
    return packed


def _reject_ext(code: int, data: bytes) -> object:
    raise DecodeError(f"msgpack ext type {code} is not allowed")


def unpack_envelope(data: bytes | bytearray | memoryview) -> object:
    """Unpack untrusted msgpack with hard limits; any failure is a :class:`DecodeError`.

    Maps unpack to dicts (str/bytes keys only), arrays to tuples. Bin and str lengths are bounded
    by the input size, arrays by :data:`MAX_ARRAY_LEN`, maps by :data:`MAX_MAP_LEN`.
    """
    nbytes = memoryview(data).nbytes
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            ext_hook=_reject_ext,
            max_ext_len=0,
            max_bin_len=nbytes,
            max_str_len=nbytes,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError(f"trailing bytes after the message: {exc}") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        reason = "truncated message" if "incomplete" in str(exc) else f"malformed msgpack: {exc}"
        raise DecodeError(reason) from None


def open_envelope(obj: object, expected: type[Message] | None) -> tuple[type[Message], dict[str, Any]]:
    """Check the envelope of an unpacked message and return its message type and body.

    Raises :class:`DecodeError` for a non-envelope, an unknown version or kind, a kind other
    than ``expected.kind``, or a body that is not a map.
    """
    if not isinstance(obj, dict) or set(obj) != {"k", "v", "b"}:
        raise DecodeError("not an ELSA message: expected a map with keys 'k', 'v', 'b'")
    version = obj["v"]
    if type(version) is not int or version != WIRE_VERSION:
        raise DecodeError(f"unsupported wire version {version!r}; this node speaks {WIRE_VERSION}")
    kind = obj["k"]
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise DecodeError(f"unknown message kind {kind!r}")
    if expected is not None and cls is not expected:
        raise DecodeError(f"expected a {expected.kind!r} message, got {kind!r}")
    body = obj["b"]
    if not isinstance(body, dict):
        raise DecodeError(f"{kind} message body is not a map")
    return cls, body


def validate_body(cls: type[Message], body: dict[str, Any]) -> Message:
    """Validate a body strictly into ``cls``.

    Raises :class:`DecodeError` listing the failing fields (never echoing the input values),
    or :class:`elsa.errors.TensorError` for an inconsistent tensor payload.
    """
    try:
        return cls.model_validate(body, strict=True)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in err['loc']) or '<body>'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)[:5]
        ]
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise DecodeError(f"invalid {cls.kind} message: {'; '.join(problems)}{more}") from None


@dataclass(frozen=True)
class BufferRef:
    """Where a frame-stream header refers to raw buffer ``index`` of ``nbytes`` bytes."""

    container: dict[str, Any]
    key: str
    index: int
    nbytes: int


def find_buffer_refs(body: dict[str, Any]) -> list[BufferRef]:
    """All ``{"$buf": i, "n": nbytes}`` references in a body, sorted by ``i``.

    Searches maps only, at most :data:`MAX_REF_DEPTH` deep. Raises :class:`DecodeError` for a
    malformed reference or indices that are not exactly ``0 .. k-1``.
    """
    refs: list[BufferRef] = []
    _collect_refs(body, refs, MAX_REF_DEPTH)
    refs.sort(key=lambda ref: ref.index)
    if [ref.index for ref in refs] != list(range(len(refs))):
        raise DecodeError("buffer references must be numbered 0..k-1, each exactly once")
    return refs


def _collect_refs(node: dict[str, Any], refs: list[BufferRef], depth: int) -> None:
    for key, value in node.items():
        if not isinstance(value, dict):
            continue
        if BUF_KEY in value:
            index, nbytes = value.get(BUF_KEY), value.get("n")
            if set(value) != {BUF_KEY, "n"} or type(index) is not int or type(nbytes) is not int:
                raise DecodeError("malformed buffer reference: expected {'$buf': int, 'n': int}")
            if index < 0 or nbytes < 0:
                raise DecodeError("buffer reference has a negative index or size")
            refs.append(BufferRef(node, key, index, nbytes))
        elif depth > 1:
            _collect_refs(value, refs, depth - 1)

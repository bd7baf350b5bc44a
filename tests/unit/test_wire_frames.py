"""elsa.wire.frames: length-prefixed streaming with raw buffer frames, limits and typed errors."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_wire_strategies import messages

from elsa.errors import ConfigError, DecodeError, PayloadTooLargeError, TensorError
from elsa.params import TransportParams
from elsa.wire import (
    AdapterBroadcast,
    AdapterUpdate,
    ErrorMessage,
    ForwardRequest,
    FrameDecoder,
    Message,
    SketchPayload,
    TensorPayload,
    encode_frames,
    frames_nbytes,
    iter_messages,
)


def _payload(n: int, dtype: str = "float32") -> TensorPayload:
    arr = np.arange(n, dtype="<f4" if dtype == "float32" else "<i8")
    return TensorPayload(dtype=dtype, shape=(n,), data=arr.tobytes())


def _sketch(tensor: str, cols: int) -> SketchPayload:
    """A one-row float32 sketch of ``cols`` buckets (``4 * cols`` table bytes) of ``tensor``."""
    table = TensorPayload(dtype="float32", shape=(1, cols), data=_payload(cols).data)
    return SketchPayload(
        rows=1, cols=cols, length=10 * cols, seed=3, round=1, tensor=tensor, dense=False, table=table
    )


def _forward(n_act: int = 1000, n_mask: int = 4) -> ForwardRequest:
    return ForwardRequest(
        session_id="s", step=1, activations=_payload(n_act), attention_mask=_payload(n_mask, "int64")
    )


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def _header(kind: str, body: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb({"k": kind, "v": 1, "b": body}, use_bin_type=True)
    return packed


def _stream(*msgs: Message, inline_limit: int = 64) -> bytes:
    return b"".join(bytes(piece) for msg in msgs for piece in encode_frames(msg, inline_limit=inline_limit))


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- layout --------------------------------------------------------------------------------


def test_large_buffers_travel_as_raw_zero_copy_frames() -> None:
    msg = _forward(n_act=1000, n_mask=4)  # 4000-byte activations, 32-byte mask
    pieces = encode_frames(msg, inline_limit=1024)
    assert len(pieces) == 4
    prefix, header, buf_prefix, buf = pieces
    assert prefix == len(header).to_bytes(4, "big")
    assert buf_prefix == b"\x00\x00\x0f\xa0"  # 4000
    assert isinstance(buf, memoryview)
    assert buf.obj is msg.activations.data  # no copy of the tensor buffer
    decoded = msgpack.unpackb(bytes(header))
    assert decoded["k"] == "forward_request"
    assert decoded["b"]["activations"] == {
        "dtype": "float32",
        "shape": [1000],
        "data": {"$buf": 0, "n": 4000},
    }
    assert decoded["b"]["attention_mask"]["data"] == msg.attention_mask.data
    assert frames_nbytes(pieces) == 4 + len(header) + 4 + 4000


def test_inline_limit_is_inclusive() -> None:
    msg = _forward(n_act=16, n_mask=1)  # 64-byte activations
    assert len(encode_frames(msg, inline_limit=64)) == 2
    assert len(encode_frames(msg, inline_limit=63)) == 4


def test_buffers_are_numbered_in_field_order() -> None:
    msg = AdapterUpdate(
        node_id="n",
        run_id="r",
        round=0,
        num_examples=3,
        sketches={
            "b.lora_A": _sketch("b.lora_A", 100),
            "a.lora_B": _sketch("a.lora_B", 5),
            "c.lora_B": _sketch("c.lora_B", 200),
        },
    )
    pieces = encode_frames(msg, inline_limit=64)
    body = msgpack.unpackb(bytes(pieces[1]))["b"]["sketches"]
    # Geometry stays in the header; only large tables leave it.
    geometry = {k: v for k, v in body["b.lora_A"].items() if k != "table"}
    assert geometry == msg.sketches["b.lora_A"].model_dump(exclude={"table"})
    assert body["b.lora_A"]["table"]["data"] == {"$buf": 0, "n": 400}
    assert body["b.lora_A"]["table"]["shape"] == [1, 100]
    assert body["a.lora_B"]["table"]["data"] == msg.sketches["a.lora_B"].table.data
    assert body["c.lora_B"]["table"]["data"] == {"$buf": 1, "n": 800}
    assert [bytes(p) for p in pieces[2:]] == [
        (400).to_bytes(4, "big"),
        msg.sketches["b.lora_A"].table.data,
        (800).to_bytes(4, "big"),
        msg.sketches["c.lora_B"].table.data,
    ]
    assert isinstance(pieces[3], memoryview)
    assert pieces[3].obj is msg.sketches["b.lora_A"].table.data  # no copy of the table
    decoder = FrameDecoder()
    assert decoder.feed(b"".join(bytes(p) for p in pieces)) == [msg]


def test_broadcast_values_come_before_sketches() -> None:
    msg = AdapterBroadcast(
        run_id="r",
        round=2,
        version=3,
        tensors={"z.lora_A": _payload(50), "y.lora_B": _payload(2)},
        sketches={"a.lora_A": _sketch("a.lora_A", 30)},
        base_version=2,
    )
    pieces = encode_frames(msg, inline_limit=64)
    body = msgpack.unpackb(bytes(pieces[1]))["b"]
    assert body["tensors"]["z.lora_A"]["data"] == {"$buf": 0, "n": 200}
    assert body["tensors"]["y.lora_B"]["data"] == msg.tensors["y.lora_B"].data
    assert body["sketches"]["a.lora_A"]["table"]["data"] == {"$buf": 1, "n": 120}
    assert body["base_version"] == 2
    assert [bytes(p) for p in pieces[3::2]] == [
        msg.tensors["z.lora_A"].data,
        msg.sketches["a.lora_A"].table.data,
    ]
    assert FrameDecoder(expected=AdapterBroadcast).feed(b"".join(bytes(p) for p in pieces)) == [msg]


def test_a_broadcast_breaking_its_rules_is_refused_after_its_buffers() -> None:
    sketch = _sketch("k", 30)
    body = {
        "run_id": "r",
        "round": 2,
        "version": 3,
        "tensors": {},
        "sketches": {
            "k": {
                **sketch.model_dump(exclude={"table"}),
                "table": {"dtype": "float32", "shape": [1, 30], "data": {"$buf": 0, "n": 120}},
            }
        },
        "base_version": None,
    }
    decoder = FrameDecoder()
    assert decoder.feed(_frame(_header("adapter_broadcast", body))) == []
    with pytest.raises(DecodeError, match="sketched deltas need a base_version"):
        decoder.feed(_frame(sketch.table.data))
    decoder = FrameDecoder()
    assert decoder.feed(_frame(_header("adapter_broadcast", {**body, "base_version": 1}))) == []
    (msg,) = decoder.feed(_frame(sketch.table.data))
    assert isinstance(msg, AdapterBroadcast)
    assert msg.sketches == {"k": sketch}


# --- round trips -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(messages, min_size=1, max_size=3),
    st.sampled_from([0, 8, 64, 65536]),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_stream_round_trip_with_arbitrary_chunking(
    msgs: list[Message], inline_limit: int, cuts: list[int]
) -> None:
    decoder = FrameDecoder()
    out: list[Message] = []
    for chunk in _split(_stream(*msgs, inline_limit=inline_limit), cuts):
        out.extend(decoder.feed(chunk))
    assert out == msgs
    assert decoder.idle
    decoder.finish()


def test_feeding_pieces_directly_and_byte_by_byte() -> None:
    msg = _forward(n_act=300)
    decoder = FrameDecoder(expected=ForwardRequest)
    out: list[Message] = []
    for piece in encode_frames(msg, inline_limit=16):
        out.extend(decoder.feed(piece))
    assert out == [msg]
    stream = _stream(msg, inline_limit=16)
    out = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i : i + 1]))
        if i < len(stream) - 1:
            assert out == []
    assert out == [msg]


def test_reused_bytearray_chunks_do_not_corrupt_buffered_data() -> None:
    msg = _forward(n_act=50)
    stream = _stream(msg, inline_limit=16)
    decoder = FrameDecoder()
    buffer = bytearray(32)
    out: list[Message] = []
    for start in range(0, len(stream), 32):
        chunk = stream[start : start + 32]
        buffer[: len(chunk)] = chunk
        out.extend(decoder.feed(memoryview(buffer)[: len(chunk)]))
        buffer[:] = b"\xff" * 32
    assert out == [msg]


def test_iter_messages_yields_all_and_detects_a_cut_stream() -> None:
    msgs = [_forward(n_act=100), ErrorMessage(error="e", detail="d"), _forward(n_act=7)]
    stream = _stream(*msgs, inline_limit=16)

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 37):
            yield data[start : start + 37]

    async def collect(data: bytes) -> list[Message]:
        return [m async for m in iter_messages(chunks(data), FrameDecoder())]

    assert asyncio.run(collect(stream)) == msgs
    with pytest.raises(DecodeError, match="stream ended inside a message"):
        asyncio.run(collect(stream[:-1]))


# --- limits and typed errors ----------------------------------------------------------------


def test_oversized_length_prefix_is_rejected_before_buffering() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(PayloadTooLargeError, match="frame of 4294967295 bytes exceeds the limit of 1024"):
        decoder.feed(b"\xff\xff\xff\xff")


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    msg = ErrorMessage(error="e", detail="d")
    stream = _stream(msg)
    decoder = FrameDecoder(max_frame_bytes=len(stream) - 4, max_message_bytes=len(stream))
    assert decoder.feed(stream) == [msg]
    with pytest.raises(PayloadTooLargeError):
        FrameDecoder(max_frame_bytes=len(stream) - 5).feed(stream)
    with pytest.raises(PayloadTooLargeError, match="message header"):
        FrameDecoder(max_message_bytes=len(stream) - 1).feed(stream)


def test_oversized_message_is_rejected_at_its_header() -> None:
    msg = _forward(n_act=1000)
    pieces = encode_frames(msg, inline_limit=64)
    total = frames_nbytes(pieces)
    assert FrameDecoder(max_message_bytes=total).feed(b"".join(bytes(p) for p in pieces)) == [msg]
    decoder = FrameDecoder(max_message_bytes=total - 1)
    with pytest.raises(PayloadTooLargeError, match=f"message of {total} bytes"):
        decoder.feed(bytes(pieces[0]) + bytes(pieces[1]))  # header only: buffers never arrive
    with pytest.raises(PayloadTooLargeError, match="buffer 0 of 4000 bytes"):
        FrameDecoder(max_frame_bytes=3999).feed(bytes(pieces[0]) + bytes(pieces[1]))


def test_buffer_frame_of_the_wrong_length_raises_decode_error() -> None:
    pieces = encode_frames(_forward(n_act=1000), inline_limit=64)
    decoder = FrameDecoder()
    assert decoder.feed(bytes(pieces[0]) + bytes(pieces[1])) == []
    with pytest.raises(DecodeError, match="buffer frame 0 is 3996 bytes, header announced 4000"):
        decoder.feed(_frame(b"\x00" * 3996))


def test_garbage_header_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="malformed msgpack"):
        FrameDecoder().feed(_frame(b"\xc1\xc1"))
    with pytest.raises(DecodeError, match="truncated"):
        FrameDecoder().feed(_frame(b""))
    with pytest.raises(DecodeError, match="not an ELSA message"):
        FrameDecoder().feed(_frame(b"\x01"))


def test_wrong_kind_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected a 'forward_request' message, got 'error'"):
        FrameDecoder(expected=ForwardRequest).feed(_stream(ErrorMessage(error="e", detail="d")))


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ({"$buf": 1, "n": 8}, "numbered 0..k-1"),
        ({"$buf": "0", "n": 8}, "malformed buffer reference"),
        ({"$buf": 0, "n": 8, "x": 1}, "malformed buffer reference"),
        ({"$buf": 0, "n": -8}, "negative"),
    ],
)
def test_bad_buffer_references_raise_decode_error(ref: dict[str, Any], match: str) -> None:
    body = {"error": "e", "detail": "d", "tensor": {"dtype": "float32", "shape": [2], "data": ref}}
    with pytest.raises(DecodeError, match=match):
        FrameDecoder().feed(_frame(_header("error", body)))


def test_inconsistent_tensor_behind_a_reference_raises_tensor_error() -> None:
    body = {
        "session_id": "s",
        "step": 0,
        "activations": {"dtype": "float32", "shape": [3], "data": {"$buf": 0, "n": 8}},
        "attention_mask": {"dtype": "int64", "shape": [1], "data": b"\x01" + b"\x00" * 7},
    }
    decoder = FrameDecoder()
    assert decoder.feed(_frame(_header("forward_request", body))) == []
    with pytest.raises(TensorError, match="8 bytes but dtype float32 and shape \\(3,\\) need 12"):
        decoder.feed(_frame(b"\x00" * 8))


def test_errors_are_final_and_drop_buffered_state() -> None:
    msg = ErrorMessage(error="e", detail="d")
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(PayloadTooLargeError):
        decoder.feed(_stream(msg) + b"\x00\x01\x00\x00" + b"\x00" * 10)  # a good message, then 64 KiB frame
    assert decoder.idle
    with pytest.raises(DecodeError, match="already failed: frame of 65536 bytes"):
        decoder.feed(_stream(msg))
    with pytest.raises(DecodeError, match="already failed"):
        decoder.finish()


def test_finish_on_a_partial_message_raises_decode_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(_stream(ErrorMessage(error="e", detail="d"))[:-2])
    assert not decoder.idle
    with pytest.raises(DecodeError, match="stream ended inside a message"):
        decoder.finish()


def test_limits_must_be_positive_and_can_come_from_params() -> None:
    with pytest.raises(ConfigError):
        FrameDecoder(max_frame_bytes=0)
    with pytest.raises(ConfigError):
        FrameDecoder(max_message_bytes=-1)
    decoder = FrameDecoder.from_params(TransportParams(max_message_bytes=100), expected=ErrorMessage)
    with pytest.raises(PayloadTooLargeError, match="frame of 101 bytes exceeds the limit of 100"):
        decoder.feed((101).to_bytes(4, "big"))

"""elsa.wire messages and codec: round trips for every message type, and typed decode errors."""

from __future__ import annotations

import math
import re
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from test_wire_strategies import MESSAGE_STRATEGIES, messages

from elsa.errors import DecodeError, PayloadTooLargeError, TensorError, WireError
from elsa.wire import (
    MESSAGE_TYPES,
    AdapterBroadcast,
    AdapterUpdate,
    ErrorMessage,
    ForwardRequest,
    ForwardResponse,
    Message,
    SketchPayload,
    TensorPayload,
    decode,
    encode,
)

F16_PAIR = TensorPayload(dtype="float16", shape=(2,), data=b"\x00\x3c\x00\xc0")  # [1.0, -2.0]


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _envelope(kind: str, body: dict[str, Any], version: Any = 1) -> bytes:
    return _pack({"k": kind, "v": version, "b": body})


def _sketch_body(**changes: Any) -> dict[str, Any]:
    """A dense 1 x 2 sketch of tensor 'k' as it appears in a message body."""
    body: dict[str, Any] = {
        "rows": 1,
        "cols": 2,
        "length": 2,
        "seed": 7,
        "round": 1,
        "tensor": "k",
        "dense": True,
        "table": {"dtype": "float16", "shape": [1, 2], "data": b"\x00\x3c\x00\xc0"},
    }
    body.update(changes)
    return body


def _update_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": "n",
        "run_id": "r",
        "round": 1,
        "num_examples": 1,
        "sketches": {"k": _sketch_body()},
    }
    body.update(changes)
    return body


def _broadcast_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"run_id": "r", "round": 1, "version": 2}
    body.update(changes)
    return body


F16_TABLE = TensorPayload(dtype="float16", shape=(1, 2), data=b"\x00\x3c\x00\xc0")


def _sketch(**changes: Any) -> SketchPayload:
    fields: dict[str, Any] = {**_sketch_body(), "table": F16_TABLE}
    fields.update(changes)
    return SketchPayload(**fields)


def _forward_response_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": "s-1",
        "step": 3,
        "activations": {"dtype": "float16", "shape": [2], "data": b"\x00\x3c\x00\xc0"},
    }
    body.update(changes)
    return body


# --- round trips -------------------------------------------------------------------------


@given(messages)
def test_decode_encode_round_trip_for_every_message(msg: Message) -> None:
    data = encode(msg)
    assert decode(data) == msg
    same = decode(memoryview(data), type(msg))
    assert type(same) is type(msg)
    assert same == msg


@pytest.mark.parametrize("kind", sorted(MESSAGE_STRATEGIES))
@given(data=st.data())
def test_round_trip_per_kind(kind: str, data: st.DataObject) -> None:
    msg = data.draw(MESSAGE_STRATEGIES[kind])
    assert decode(encode(msg), MESSAGE_TYPES[kind]) == msg


def test_encoding_is_the_documented_msgpack_layout() -> None:
    encoded = encode(ErrorMessage(error="e", detail="d"))
    # fixmap(3) "k" "error" "v" 1 "b" fixmap(2) "error" "e" "detail" "d"
    assert encoded == (b"\x83\xa1k\xa5error\xa1v\x01\xa1b\x82\xa5error\xa1e\xa6detail\xa1d")
    msg = ForwardResponse(session_id="s-1", step=3, activations=F16_PAIR)
    encoded = encode(msg)
    assert msgpack.unpackb(encoded) == {"k": "forward_response", "v": 1, "b": _forward_response_body()}
    assert b"\xc4\x04\x00\x3c\x00\xc0" in encoded  # bin8 of length 4: raw bytes, not a str


def test_registry_matches_kinds_and_every_field_is_documented() -> None:
    assert set(MESSAGE_TYPES) == {
        "forward_request",
        "forward_response",
        "backward_request",
        "backward_response",
        "adapter_update",
        "adapter_broadcast",
        "probe_report",
        "error",
    }
    for kind, cls in MESSAGE_TYPES.items():
        assert cls.kind == kind
        assert cls.__doc__
        for name, info in cls.model_fields.items():
            assert info.description, f"{cls.__name__}.{name} has no description"
    assert SketchPayload.__doc__
    for name, info in SketchPayload.model_fields.items():
        assert info.description, f"SketchPayload.{name} has no description"


def test_a_sketch_travels_as_flat_geometry_fields_and_a_table() -> None:
    msg = AdapterUpdate(node_id="n", run_id="r", round=1, num_examples=1, sketches={"k": _sketch()})
    encoded = encode(msg)
    assert msgpack.unpackb(encoded)["b"] == {**_update_body(), "loss": None, "weight": None}
    assert decode(encoded, AdapterUpdate) == msg
    # The full range of a run seed (int64 and uint64) survives msgpack.
    for seed in (-(2**63), 2**64 - 1):
        big = msg.model_copy(update={"sketches": {"k": _sketch(seed=seed)}})
        assert decode(encode(big), AdapterUpdate).sketches["k"].seed == seed


def test_messages_are_frozen() -> None:
    msg = ErrorMessage(error="e", detail="d")
    with pytest.raises(ValueError, match="frozen"):
        msg.error = "x"
    sketch = _sketch()
    with pytest.raises(ValueError, match="frozen"):
        sketch.rows = 2  # type: ignore[misc]


# --- adapter exchange rules ----------------------------------------------------------------


def test_broadcast_defaults_to_nothing_changed() -> None:
    msg = AdapterBroadcast(run_id="r", round=1, version=2)
    assert (msg.tensors, msg.sketches, msg.base_version) == ({}, {}, None)
    assert decode(encode(msg), AdapterBroadcast) == msg
    assert decode(_envelope("adapter_broadcast", _broadcast_body()), AdapterBroadcast) == msg


def test_broadcast_sketches_need_a_base_version() -> None:
    with pytest.raises(ValueError, match="sketched deltas need a base_version"):
        AdapterBroadcast(run_id="r", round=1, version=2, sketches={"k": _sketch()})
    with pytest.raises(DecodeError, match="sketched deltas need a base_version"):
        decode(_envelope("adapter_broadcast", _broadcast_body(sketches={"k": _sketch_body()})))
    body = _broadcast_body(sketches={"k": _sketch_body()}, base_version=None)
    with pytest.raises(DecodeError, match="sketched deltas need a base_version"):
        decode(_envelope("adapter_broadcast", body))
    # Version 0 (the initial adapter) is a base; a base without sketches is harmless.
    msg = AdapterBroadcast(run_id="r", round=1, version=2, sketches={"k": _sketch()}, base_version=0)
    assert decode(encode(msg), AdapterBroadcast) == msg
    body = _broadcast_body(sketches={"k": _sketch_body()}, base_version=0)
    assert decode(_envelope("adapter_broadcast", body), AdapterBroadcast) == msg
    assert AdapterBroadcast(run_id="r", round=1, version=2, base_version=1).sketches == {}
    with pytest.raises(DecodeError, match="base_version: Input should be greater than or equal to 0"):
        decode(_envelope("adapter_broadcast", _broadcast_body(base_version=-1)))


def test_broadcast_key_is_a_value_or_a_delta_not_both() -> None:
    with pytest.raises(ValueError, match="either a full value or a sketched delta"):
        AdapterBroadcast(
            run_id="r",
            round=1,
            version=2,
            tensors={"k": F16_PAIR},
            sketches={"k": _sketch()},
            base_version=1,
        )
    body = _broadcast_body(
        tensors={"k": _sketch_body()["table"]}, sketches={"k": _sketch_body()}, base_version=1
    )
    with pytest.raises(DecodeError, match="either a full value or a sketched delta"):
        decode(_envelope("adapter_broadcast", body))
    # Disjoint keys are fine.
    msg = AdapterBroadcast(
        run_id="r", round=1, version=2, tensors={"j": F16_PAIR}, sketches={"k": _sketch()}, base_version=1
    )
    assert decode(encode(msg), AdapterBroadcast) == msg


def test_an_update_carries_sketches_not_tensors() -> None:
    assert decode(_envelope("adapter_update", _update_body()), AdapterUpdate).sketches == {"k": _sketch()}
    body = _update_body(tensors={"k": _sketch_body()["table"]})
    with pytest.raises(DecodeError, match="tensors: Extra inputs are not permitted"):
        decode(_envelope("adapter_update", body))
    body = _update_body()
    del body["sketches"]
    with pytest.raises(DecodeError, match="sketches: Field required"):
        decode(_envelope("adapter_update", body))
    with pytest.raises(DecodeError, match=r"sketches\.k\."):
        decode(_envelope("adapter_update", _update_body(sketches={"k": _sketch_body()["table"]})))
    with pytest.raises(DecodeError, match=r"sketches\.\.\[key\]: String should have at least 1 character"):
        decode(_envelope("adapter_update", _update_body(sketches={"": _sketch_body()})))


@pytest.mark.parametrize(
    ("changes", "msg"),
    [
        ({"rows": 0}, "Input should be greater than or equal to 1"),
        ({"rows": 1025}, "Input should be less than or equal to 1024"),
        ({"cols": 0}, "Input should be greater than or equal to 1"),
        ({"length": 0}, "Input should be greater than or equal to 1"),
        ({"length": 2**40 + 1}, "Input should be less than or equal to 1099511627776"),
        ({"seed": -(2**63) - 1}, "Input should be greater than or equal to -9223372036854775808"),
        ({"seed": 2**64}, "Input should be less than or equal to 18446744073709551615"),
        ({"round": -1}, "Input should be greater than or equal to 0"),
        ({"tensor": ""}, "String should have at least 1 character"),
        ({"tensor": "x" * 513}, "String should have at most 512 characters"),
        ({"extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_sketch_payload_bounds(changes: dict[str, Any], msg: str) -> None:
    (field,) = changes
    with pytest.raises(ValidationError) as info:
        _sketch(**changes)
    assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [((field,), msg)]
    if field == "seed":  # outside msgpack's integers: a sender cannot even pack it
        with pytest.raises(OverflowError):
            _envelope("adapter_update", _update_body(sketches={"k": _sketch_body(**changes)}))
        return
    match = re.escape(f"invalid adapter_update message: sketches.k.{field}: {msg}")
    with pytest.raises(DecodeError, match=match):
        decode(_envelope("adapter_update", _update_body(sketches={"k": _sketch_body(**changes)})))
    body = _broadcast_body(sketches={"k": _sketch_body(**changes)}, base_version=1)
    with pytest.raises(DecodeError, match=re.escape(f"sketches.k.{field}: {msg}")):
        decode(_envelope("adapter_broadcast", body))


def test_sketch_payload_edges_are_accepted() -> None:
    for changes in (
        {"rows": 1024},
        {"length": 2**40},
        {"seed": -(2**63)},
        {"seed": 2**64 - 1},
        {"round": 2**63 - 1},
        {"tensor": "x" * 512},
    ):
        body = _update_body(sketches={"k": _sketch_body(**changes)})
        assert decode(_envelope("adapter_update", body), AdapterUpdate).sketches["k"] == _sketch(**changes)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"rows": "1"}, "rows: Input should be a valid integer"),
        ({"rows": 1.0}, "rows: Input should be a valid integer"),
        ({"rows": True}, "rows: Input should be a valid integer"),
        ({"dense": 1}, "dense: Input should be a valid boolean"),
        ({"tensor": 3}, "tensor: Input should be a valid string"),
        ({"table": {"dtype": "float16", "shape": [1, 2]}}, "table.data: Field required"),
    ],
)
def test_sketch_fields_are_strict_on_the_wire(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(f"sketches.k.{match}")):
        decode(_envelope("adapter_update", _update_body(sketches={"k": _sketch_body(**changes)})))


def test_inconsistent_sketch_table_raises_tensor_error() -> None:
    table = {"dtype": "float16", "shape": [1, 3], "data": b"\x00\x3c\x00\xc0"}
    with pytest.raises(TensorError, match="4 bytes but dtype float16"):
        decode(_envelope("adapter_update", _update_body(sketches={"k": _sketch_body(table=table)})))


# --- typed errors --------------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_garbage_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (b"\xc1", "malformed msgpack"),
        (b"\x01", "not an ELSA message"),
        (b"\xdd\xff\xff\xff\xff", "malformed msgpack"),  # array32 claiming 4 G items
        (_pack({1: 2}), "malformed msgpack"),  # int map key
        (_pack(msgpack.ExtType(5, b"xx")), "malformed msgpack"),
        (_pack({"k": "error", "v": 1, "b": {"error": msgpack.ExtType(1, b"x"), "detail": ""}}), "ext"),
    ],
)
def test_bad_msgpack_raises_decode_error(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(data)


def test_every_truncation_raises_decode_error() -> None:
    encoded = encode(ForwardResponse(session_id="s-1", step=3, activations=F16_PAIR))
    for cut in range(len(encoded)):
        with pytest.raises(DecodeError, match="truncated"):
            decode(encoded[:cut])


def test_trailing_bytes_raise_decode_error() -> None:
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode(encode(ErrorMessage(error="e", detail="d")) + b"\x00")


def test_wrong_kind_raises_decode_error() -> None:
    encoded = encode(ErrorMessage(error="e", detail="d"))
    with pytest.raises(DecodeError, match="expected a 'forward_request' message, got 'error'"):
        decode(encoded, ForwardRequest)


def test_unknown_kind_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown message kind 'teleport'"):
        decode(_envelope("teleport", {}))
    with pytest.raises(DecodeError, match="unknown message kind 7"):
        decode(_pack({"k": 7, "v": 1, "b": {}}))


@pytest.mark.parametrize("version", [0, 2, True, "1", None])
def test_wrong_version_raises_decode_error(version: Any) -> None:
    with pytest.raises(DecodeError, match="unsupported wire version"):
        decode(_envelope("forward_response", _forward_response_body(), version))


def test_envelope_shape_is_enforced() -> None:
    with pytest.raises(DecodeError, match="not an ELSA message"):
        decode(_pack({"k": "error", "v": 1, "b": {}, "x": 0}))
    with pytest.raises(DecodeError, match="body is not a map"):
        decode(_envelope("error", [1, 2]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
        ({"step": -1}, "step: Input should be greater than or equal to 0"),
        ({"step": "3"}, "step: Input should be a valid integer"),
        ({"step": 3.0}, "step: Input should be a valid integer"),
        ({"step": True}, "step: Input should be a valid integer"),
        ({"session_id": ""}, "session_id: String should have at least 1 character"),
        ({"session_id": "x" * 257}, "session_id: String should have at most 256 characters"),
        ({"activations": {"dtype": "float16", "shape": [2], "data": "\x00<\x00\xc0"}}, "activations.data"),
        (
            {"activations": {"dtype": "float16", "shape": [2], "data": b"\x00\x3c\x00\xc0", "x": 1}},
            "activations.x",
        ),
        (
            {"activations": {"dtype": "float16", "shape": [2.0], "data": b"\x00\x3c\x00\xc0"}},
            "activations.shape.0",
        ),
    ],
)
def test_invalid_fields_raise_decode_error(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(_envelope("forward_response", _forward_response_body(**changes)))


def test_missing_field_raises_decode_error() -> None:
    body = _forward_response_body()
    del body["step"]
    with pytest.raises(DecodeError, match="invalid forward_response message: step: Field required"):
        decode(_envelope("forward_response", body))


def test_decode_error_does_not_echo_input_values() -> None:
    secret = "x" * 300
    with pytest.raises(DecodeError) as info:
        decode(_envelope("forward_response", _forward_response_body(session_id=secret)))
    assert secret not in info.value.detail


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        ({"dtype": "float16", "shape": [-2], "data": b""}, "dimension"),
        ({"dtype": "float16", "shape": [3], "data": b"\x00\x3c\x00\xc0"}, "4 bytes but dtype float16"),
        ({"dtype": "float64", "shape": [1], "data": b"\x00" * 8}, "unknown tensor dtype"),
    ],
)
def test_inconsistent_tensor_in_message_raises_tensor_error(tensor: dict[str, Any], match: str) -> None:
    with pytest.raises(TensorError, match=match) as info:
        decode(_envelope("forward_response", _forward_response_body(activations=tensor)))
    assert isinstance(info.value, WireError)


def test_nonfinite_loss_is_rejected() -> None:
    body = {"node_id": "n", "run_id": "r", "round": 0, "num_examples": 1, "sketches": {}, "loss": math.nan}
    with pytest.raises(DecodeError, match="loss"):
        decode(_envelope("adapter_update", body))
    body["loss"] = 0.25
    assert decode(_envelope("adapter_update", body), AdapterUpdate).loss == 0.25


def test_oversized_message_raises_payload_too_large_before_unpacking() -> None:
    encoded = encode(ForwardResponse(session_id="s-1", step=3, activations=F16_PAIR))
    assert decode(encoded, max_bytes=len(encoded)).kind == "forward_response"
    with pytest.raises(PayloadTooLargeError, match=f"{len(encoded)} bytes, limit is {len(encoded) - 1}"):
        decode(encoded, max_bytes=len(encoded) - 1)
    with pytest.raises(PayloadTooLargeError):
        decode(b"\xc1" * 100, max_bytes=10)  # garbage, but the size check comes first


@given(messages, st.data())
def test_any_corruption_is_an_elsa_error_or_still_valid(msg: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode(msg))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(encoded))
    except WireError:
        return  # every failure must be a typed wire error; anything else fails the test
    assert isinstance(decoded, Message)

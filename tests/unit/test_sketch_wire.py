"""elsa.sketch.wire: sketches travel as SketchPayload (geometry + TensorPayload table) and are
checked on arrival (DESIGN §3)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from elsa.errors import AdapterMismatchError, DecodeError, GeometryMismatchError, TensorError
from elsa.sketch import (
    CountSketch,
    SketchGeometry,
    SketchParams,
    sketch_from_payload,
    sketch_state,
    sketch_to_payload,
    sketches_from_payloads,
    sketches_to_payloads,
    state_geometries,
)
from elsa.wire import (
    AdapterBroadcast,
    AdapterUpdate,
    FrameDecoder,
    SketchPayload,
    TensorPayload,
    decode,
    encode,
    encode_frames,
    to_payload,
)

KEY = "blocks.0.q.lora_A.weight"


def _sketch(seed: int = 0, tensor: str = KEY) -> CountSketch:
    g = SketchGeometry(rows=5, cols=40, length=2000, seed=seed, round=1, tensor=tensor)
    return CountSketch.encode(np.random.default_rng(0).standard_normal(2000), g)


def _geometry_fields(p: SketchPayload) -> dict[str, Any]:
    return p.model_dump(exclude={"table"})


def test_fp32_round_trip_is_exact_and_the_payload_is_a_plain_tensor() -> None:
    s = _sketch()
    p = sketch_to_payload(s)
    assert isinstance(p, SketchPayload)
    assert isinstance(p.table, TensorPayload)
    assert (p.table.dtype, p.table.shape) == ("float32", (5, 40))
    assert _geometry_fields(p) == s.geometry.to_dict()
    back = sketch_from_payload(p, s.geometry)
    np.testing.assert_array_equal(back.table, s.table)
    assert back.geometry == s.geometry
    # The dict form (as after a msgpack hop) is accepted too, with the table as a model or a map.
    for data in (p.model_dump(), {**s.geometry.to_dict(), "table": p.table}):
        again = sketch_from_payload(data, s.geometry)
        np.testing.assert_array_equal(again.table, s.table)


@pytest.mark.parametrize(("wire_dtype", "dtype"), [("fp16", "float16"), ("bf16", "bfloat16")])
def test_half_precision_tables_halve_the_bytes(wire_dtype: str, dtype: str) -> None:
    s = _sketch()
    p = sketch_to_payload(s, wire_dtype)  # type: ignore[arg-type]
    assert p.table.dtype == dtype
    assert len(p.table.data) == s.nbytes // 2
    back = sketch_from_payload(p, s.geometry)
    assert back.table.dtype == np.float32
    tol = 1e-3 if dtype == "float16" else 1e-2
    np.testing.assert_allclose(back.table, s.table, rtol=tol, atol=tol)


def test_a_sketched_state_fits_an_adapter_update_message_through_msgpack() -> None:
    params = SketchParams()
    state = {"w": torch.randn(64, 48), "b": torch.randn(3)}
    sketches = sketch_state(state, params, round=2, seed=5)
    payloads = sketches_to_payloads(sketches)
    assert list(payloads) == sorted(state)
    assert payloads["b"].dense and not payloads["w"].dense  # the bias travels exactly
    msg = AdapterUpdate(node_id="d1", run_id="r", round=2, num_examples=10, sketches=payloads)
    got = decode(encode(msg))
    assert isinstance(got, AdapterUpdate)
    assert got == msg
    expected = state_geometries({k: v.numel() for k, v in state.items()}, params, round=2, seed=5)
    back = sketches_from_payloads(got.sketches, expected, exact_keys=True)
    assert list(back) == sorted(state)
    for key, geometry in expected.items():
        assert back[key].geometry == geometry
        np.testing.assert_array_equal(back[key].table, sketches[key].table)


def test_a_sketched_broadcast_travels_as_frames_with_tables_as_raw_buffers() -> None:
    params = SketchParams()
    state = {"w": torch.randn(64, 48), "b": torch.randn(3)}
    sketches = sketch_state(state, params, round=4, seed=7)
    msg = AdapterBroadcast(
        run_id="r",
        round=4,
        version=5,
        tensors={"head": to_payload(torch.randn(2, 2))},
        sketches=sketches_to_payloads(sketches, "fp16"),
        base_version=4,
    )
    pieces = encode_frames(msg, inline_limit=64)
    assert len(pieces) > 2  # the sketched w table went out of band
    (got,) = FrameDecoder(expected=AdapterBroadcast).feed(b"".join(bytes(p) for p in pieces))
    assert got == msg
    expected = state_geometries({k: v.numel() for k, v in state.items()}, params, round=4, seed=7)
    back = sketches_from_payloads(got.sketches, expected, exact_keys=True)
    for key in state:
        np.testing.assert_allclose(back[key].table, sketches[key].table, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("field", ["seed", "round", "tensor", "rows", "cols", "length"])
def test_a_sketch_of_another_geometry_is_refused(field: str) -> None:
    s = _sketch()
    p = sketch_to_payload(s)
    changed = p.model_dump()
    changed[field] = changed[field] + "x" if field == "tensor" else changed[field] + 1
    with pytest.raises(GeometryMismatchError, match=field) as info:
        sketch_from_payload(changed, s.geometry)
    assert info.value.http_status == 409
    with pytest.raises(GeometryMismatchError, match=field):
        sketch_from_payload(SketchPayload(**changed), s.geometry)  # as a model, too
    with pytest.raises(GeometryMismatchError):
        sketch_from_payload(p, _sketch(seed=1).geometry)


def test_a_dense_sketch_is_not_a_sketched_one() -> None:
    g = SketchGeometry(rows=1, cols=6, length=6, seed=0, round=1, tensor="b", dense=True)
    s = CountSketch.encode(np.arange(6.0), g)
    p = sketch_to_payload(s)
    np.testing.assert_array_equal(sketch_from_payload(p, g).table, s.table)
    as_sketched = SketchGeometry(rows=1, cols=6, length=6, seed=0, round=1, tensor="b")
    with pytest.raises(GeometryMismatchError, match="dense"):
        sketch_from_payload(p, as_sketched)


def test_malformed_and_non_finite_payloads_are_typed_errors() -> None:
    s = _sketch()
    p = sketch_to_payload(s)
    geometry = s.geometry.to_dict()
    table = p.table
    for bad in (
        geometry,  # no table
        {**geometry, "table": table, "extra": 1},
        "nope",
        3,
        {**geometry, "rows": "5", "table": table},  # strict: no str for an int
        {**geometry, "rows": 5.0, "table": table},
        {**geometry, "rows": True, "table": table},
        {**geometry, "dense": 0, "table": table},  # strict: no int for a bool
        {**geometry, "tensor": 1, "table": table},
        {**{k: v for k, v in geometry.items() if k != "seed"}, "table": table},
        {**geometry, "rows": 0, "table": table},
        {**geometry, "length": 0, "table": table},
        {**geometry, "seed": 2**64, "table": table},
        {**geometry, "round": -1, "table": table},
        {**geometry, "tensor": "", "table": table},
        {**geometry, "dense": True, "table": table},  # dense needs rows == 1, cols == length
        {**geometry, "table": 3},
        {**geometry, "table": {"dtype": "float32"}},
        {**geometry, "table": to_payload(torch.zeros(5, 40, dtype=torch.int32))},
    ):
        with pytest.raises(DecodeError):
            sketch_from_payload(bad, s.geometry)  # type: ignore[arg-type]
    with pytest.raises(TensorError, match="bytes"):
        sketch_from_payload({**geometry, "table": {**table.model_dump(), "data": b"\x00"}}, s.geometry)
    with pytest.raises(TensorError, match="shape"):
        sketch_from_payload({**geometry, "table": to_payload(torch.zeros(5, 41))}, s.geometry)
    nan = torch.zeros(5, 40)
    nan[0, 0] = float("nan")
    with pytest.raises(TensorError, match="NaN"):
        sketch_from_payload({**geometry, "table": to_payload(nan)}, s.geometry)


def test_sketches_from_payloads_checks_the_keys() -> None:
    sketches = {key: _sketch(tensor=key) for key in ("a", "b")}
    payloads = sketches_to_payloads(sketches)
    expected = {key: s.geometry for key, s in sketches.items()}
    extra = {**expected, "c": _sketch(tensor="c").geometry}
    # A subset of the expected keys is fine unless exact_keys.
    assert list(sketches_from_payloads(payloads, extra)) == ["a", "b"]
    with pytest.raises(AdapterMismatchError, match="missing adapter keys \\['c'\\]") as info:
        sketches_from_payloads(payloads, extra, exact_keys=True)
    assert info.value.http_status == 409
    back = sketches_from_payloads(payloads, expected, exact_keys=True)
    for key, s in sketches.items():
        np.testing.assert_array_equal(back[key].table, s.table)
    # A key the receiver does not expect is refused, with or without exact_keys.
    for exact in (False, True):
        with pytest.raises(AdapterMismatchError, match="unexpected adapter keys \\['b'\\]"):
            sketches_from_payloads(payloads, {"a": expected["a"]}, exact_keys=exact)
    assert sketches_from_payloads({}, expected) == {}


def test_sketches_from_payloads_refuses_a_sketch_under_another_key() -> None:
    sketches = {key: _sketch(tensor=key) for key in ("a", "b")}
    payloads = sketches_to_payloads(sketches)
    swapped = {"a": payloads["b"], "b": payloads["a"]}  # hashed for the other tensor
    expected = {key: s.geometry for key, s in sketches.items()}
    with pytest.raises(GeometryMismatchError, match="tensor"):
        sketches_from_payloads(swapped, expected)
    with pytest.raises(GeometryMismatchError, match="seed"):
        sketches_from_payloads(payloads, {**expected, "b": _sketch(seed=1, tensor="b").geometry})
    with pytest.raises(DecodeError):
        sketches_from_payloads({"a": {**payloads["a"].model_dump(), "rows": "5"}}, expected)  # type: ignore[dict-item]

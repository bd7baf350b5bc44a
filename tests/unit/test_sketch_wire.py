"""elsa.sketch.wire: sketches travel as geometry + TensorPayload and are checked on arrival (DESIGN §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elsa.errors import DecodeError, GeometryMismatchError, TensorError
from elsa.sketch import (
    CountSketch,
    SketchGeometry,
    SketchParams,
    sketch_from_payload,
    sketch_state,
    sketch_to_payload,
    state_geometries,
)
from elsa.wire import AdapterUpdate, TensorPayload, decode, encode, to_payload


def _sketch(seed: int = 0) -> CountSketch:
    g = SketchGeometry(rows=5, cols=40, length=2000, seed=seed, round=1, tensor="blocks.0.q.lora_A.weight")
    return CountSketch.encode(np.random.default_rng(0).standard_normal(2000), g)


def test_fp32_round_trip_is_exact_and_the_payload_is_a_plain_tensor() -> None:
    s = _sketch()
    d = sketch_to_payload(s)
    assert isinstance(d["table"], TensorPayload)
    assert (d["table"].dtype, d["table"].shape) == ("float32", (5, 40))
    assert d["geometry"] == s.geometry.to_dict()
    back = sketch_from_payload(d, s.geometry)
    np.testing.assert_array_equal(back.table, s.table)
    # The dict form of the table (as after a JSON/msgpack hop) is accepted too.
    again = sketch_from_payload(
        {"geometry": dict(d["geometry"]), "table": d["table"].model_dump()}, s.geometry
    )
    np.testing.assert_array_equal(again.table, s.table)


def test_half_precision_tables_halve_the_bytes() -> None:
    s = _sketch()
    d = sketch_to_payload(s, "fp16")
    assert d["table"].dtype == "float16"
    assert len(d["table"].data) == s.nbytes // 2
    back = sketch_from_payload(d, s.geometry)
    np.testing.assert_allclose(back.table, s.table, rtol=1e-3, atol=1e-3)


def test_a_sketched_state_fits_an_adapter_update_message_through_msgpack() -> None:
    params = SketchParams()
    state = {"w": torch.randn(64, 48), "b": torch.randn(3)}
    sketches = sketch_state(state, params, round=2, seed=5)
    msg = AdapterUpdate(
        node_id="d1",
        run_id="r",
        round=2,
        num_examples=10,
        tensors={k: sketch_to_payload(s)["table"] for k, s in sketches.items()},
    )
    got = decode(encode(msg))
    assert isinstance(got, AdapterUpdate)
    expected = state_geometries({k: v.numel() for k, v in state.items()}, params, round=2, seed=5)
    for key, geometry in expected.items():
        back = sketch_from_payload({"geometry": geometry.to_dict(), "table": got.tensors[key]}, geometry)
        np.testing.assert_array_equal(back.table, sketches[key].table)


@pytest.mark.parametrize("field", ["seed", "round", "tensor", "cols", "length"])
def test_a_sketch_of_another_geometry_is_refused(field: str) -> None:
    s = _sketch()
    d = sketch_to_payload(s)
    changed = dict(d["geometry"])
    changed[field] = changed[field] + "x" if field == "tensor" else changed[field] + 1
    with pytest.raises(GeometryMismatchError, match=field) as info:
        sketch_from_payload({"geometry": changed, "table": d["table"]}, s.geometry)
    assert info.value.http_status == 409
    with pytest.raises(GeometryMismatchError):
        sketch_from_payload(d, _sketch(seed=1).geometry)


def test_malformed_and_non_finite_payloads_are_typed_errors() -> None:
    s = _sketch()
    d = sketch_to_payload(s)
    geometry = d["geometry"]
    for bad in (
        {"geometry": geometry},
        {"geometry": geometry, "table": d["table"], "extra": 1},
        {"geometry": "nope", "table": d["table"]},
        {"geometry": {**geometry, "rows": "5"}, "table": d["table"]},
        {"geometry": {**geometry, "dense": 0}, "table": d["table"]},
        {"geometry": {k: v for k, v in geometry.items() if k != "seed"}, "table": d["table"]},
        {"geometry": geometry, "table": 3},
        {"geometry": geometry, "table": {"dtype": "float32"}},
        {"geometry": geometry, "table": to_payload(torch.zeros(5, 40, dtype=torch.int32))},
    ):
        with pytest.raises(DecodeError):
            sketch_from_payload(bad, s.geometry)
    with pytest.raises(TensorError, match="shape"):
        sketch_from_payload({"geometry": geometry, "table": to_payload(torch.zeros(5, 41))}, s.geometry)
    nan = torch.zeros(5, 40)
    nan[0, 0] = float("nan")
    with pytest.raises(TensorError, match="NaN"):
        sketch_from_payload({"geometry": geometry, "table": to_payload(nan)}, s.geometry)

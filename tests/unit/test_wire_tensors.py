"""elsa.wire.tensors: exact byte layout, casts, and typed errors for bad payloads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_wire_strategies import tensor_payloads

from elsa.errors import PayloadTooLargeError, TensorError
from elsa.params import WireDType
from elsa.wire import TENSOR_DTYPES, TensorPayload, from_payload, payload_nbytes, to_payload

TORCH = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


# --- exact layout ------------------------------------------------------------------------


def test_float32_layout_is_little_endian_c_order() -> None:
    t = torch.tensor([[1.0, 2.0], [3.0, -0.5]])
    p = to_payload(t)
    assert (p.dtype, p.shape) == ("float32", (2, 2))
    assert p.data == np.array([1.0, 2.0, 3.0, -0.5], dtype="<f4").tobytes()
    assert p.data[:4] == b"\x00\x00\x80\x3f"  # 1.0f = 0x3F800000


def test_fp16_and_bf16_payloads_hold_raw_half_bits() -> None:
    t = torch.tensor([1.0, -2.0])
    fp16 = to_payload(t, "fp16")
    bf16 = to_payload(t, "bf16")
    assert (fp16.dtype, fp16.data) == ("float16", b"\x00\x3c\x00\xc0")  # 0x3C00, 0xC000
    assert (bf16.dtype, bf16.data) == ("bfloat16", b"\x80\x3f\x00\xc0")  # 0x3F80, 0xC000
    assert payload_nbytes(bf16) == 4


def test_non_contiguous_tensor_is_sent_in_c_order() -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # values [[0, 3], [1, 4], [2, 5]]
    p = to_payload(t)
    assert p.shape == (3, 2)
    assert p.data == np.array([0, 3, 1, 4, 2, 5], dtype="<f4").tobytes()


def test_to_payload_detaches_and_does_not_mutate_input() -> None:
    t = torch.ones(3, requires_grad=True)
    p = to_payload(t, "fp16")
    assert p.dtype == "float16"
    assert t.dtype == torch.float32
    assert t.requires_grad
    assert torch.equal(t.detach(), torch.ones(3))


def test_integer_and_bool_tensors_keep_their_dtype_under_a_wire_dtype() -> None:
    for dtype, name in [
        (torch.int64, "int64"),
        (torch.int32, "int32"),
        (torch.uint8, "uint8"),
        (torch.bool, "bool"),
    ]:
        p = to_payload(torch.tensor([1, 0, 1], dtype=dtype), "fp16")
        assert p.dtype == name
        assert torch.equal(from_payload(p), torch.tensor([1, 0, 1], dtype=dtype))


def test_unsupported_dtypes_raise_tensor_error() -> None:
    with pytest.raises(TensorError, match="pass wire_dtype"):
        to_payload(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(TensorError, match="int16"):
        to_payload(torch.zeros(2, dtype=torch.int16))
    assert to_payload(torch.zeros(2, dtype=torch.float64), "fp32").dtype == "float32"


def test_empty_and_scalar_tensors() -> None:
    empty = to_payload(torch.zeros(0, 3))
    assert (empty.shape, empty.data) == ((0, 3), b"")
    assert from_payload(empty).shape == (0, 3)
    scalar = to_payload(torch.tensor(2.5))
    assert scalar.shape == ()
    assert from_payload(scalar).item() == 2.5


# --- round trips -------------------------------------------------------------------------


@given(tensor_payloads(dtypes=tuple(d for d in TENSOR_DTYPES if d != "bool")))
def test_payload_tensor_payload_round_trip_is_exact(p: TensorPayload) -> None:
    t = from_payload(p, allow_nonfinite=True)
    assert t.dtype == TORCH[p.dtype]
    assert tuple(t.shape) == p.shape
    assert to_payload(t) == p


@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0)))
def test_bool_round_trip(arr: np.ndarray) -> None:
    t = torch.from_numpy(arr.copy())
    assert torch.equal(from_payload(to_payload(t)), t)


# Magnitudes inside the normal range of fp16 (and bf16), where rounding is relative.
_LOW, _HIGH = float(np.float32(1e-4)), float(np.float32(6e4))
finite_f32 = st.floats(min_value=_LOW, max_value=_HIGH, width=32) | st.floats(
    min_value=-_HIGH, max_value=-_LOW, width=32
)


@pytest.mark.parametrize(("wire", "rel_tol"), [("fp32", 0.0), ("fp16", 2.0**-11), ("bf16", 2.0**-8)])
@settings(max_examples=50)
@given(arr=hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=5), elements=finite_f32))
def test_wire_cast_round_trip_within_half_an_ulp(wire: WireDType, rel_tol: float, arr: np.ndarray) -> None:
    x = torch.from_numpy(arr.copy())
    y = from_payload(to_payload(x, wire), dtype=torch.float32)
    assert y.dtype == torch.float32
    assert y.shape == x.shape
    assert torch.all((y - x).abs() <= rel_tol * x.abs())


def test_bf16_to_float32_is_the_exact_widening() -> None:
    bits = np.array([0x3F80, 0xC000, 0x0001, 0x7F7F, 0x8000, 0x4049], dtype="<u2")
    p = TensorPayload(dtype="bfloat16", shape=(6,), data=bits.tobytes())
    got = from_payload(p, dtype=torch.float32)
    want = torch.from_numpy(bits.astype("<u4") << 16).view(torch.float32)
    assert torch.equal(got, want)
    assert torch.equal(from_payload(p), want.to(torch.bfloat16))
    assert torch.equal(from_payload(p, dtype=torch.float16), want.to(torch.bfloat16).to(torch.float16))


def test_from_payload_casts_fp16_to_requested_dtype() -> None:
    p = to_payload(torch.tensor([0.5, -1.25]), "fp16")
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        got = from_payload(p, dtype=dtype)
        assert got.dtype == dtype
        assert got.tolist() == [0.5, -1.25]


def test_result_is_writable_and_does_not_alias_payload() -> None:
    p = to_payload(torch.tensor([1.0, 2.0]))
    for dtype in (None, torch.float32, torch.float16):
        t = from_payload(p, dtype=dtype)
        t.add_(1.0)
        assert t.tolist() == [2.0, 3.0]
    assert p.data == np.array([1.0, 2.0], dtype="<f4").tobytes()


# --- typed errors --------------------------------------------------------------------------


def test_negative_dimension_raises_tensor_error() -> None:
    with pytest.raises(TensorError, match="dimension"):
        TensorPayload(dtype="float32", shape=(-1, 2), data=b"")


def test_data_length_mismatch_raises_tensor_error() -> None:
    with pytest.raises(TensorError, match="7 bytes but dtype float32 and shape \\(2,\\) need 8"):
        TensorPayload(dtype="float32", shape=(2,), data=b"\x00" * 7)


def test_unknown_dtype_raises_tensor_error() -> None:
    with pytest.raises(TensorError, match="unknown tensor dtype 'float64'"):
        TensorPayload(dtype="float64", shape=(1,), data=b"\x00" * 8)


def test_too_many_dimensions_raise_tensor_error() -> None:
    with pytest.raises(TensorError, match="33 dimensions"):
        TensorPayload(dtype="uint8", shape=(1,) * 33, data=b"\x00")


def test_expected_shape_mismatch_raises_tensor_error() -> None:
    p = to_payload(torch.zeros(2, 3, 4))
    assert from_payload(p, expected_shape=(None, 3, 4)).shape == (2, 3, 4)
    assert from_payload(p, expected_shape=(2, None, None)).shape == (2, 3, 4)
    with pytest.raises(TensorError, match=r"does not match expected \(\*, 5, 4\)"):
        from_payload(p, expected_shape=(None, 5, 4))
    with pytest.raises(TensorError, match="does not match"):
        from_payload(p, expected_shape=(2, 3))
    with pytest.raises(TensorError, match="does not match"):
        from_payload(p, expected_shape=(2, 3, 4, 1))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_values_raise_tensor_error(dtype: str, bad: float) -> None:
    x = torch.tensor([1.0, bad, 3.0], dtype=TORCH[dtype])
    p = to_payload(x)
    with pytest.raises(TensorError, match="NaN or Inf"):
        from_payload(p)
    with pytest.raises(TensorError, match="NaN or Inf"):
        from_payload(p, dtype=torch.float32)
    allowed = from_payload(p, allow_nonfinite=True, dtype=torch.float32)
    assert allowed[0].item() == 1.0
    assert allowed[2].item() == 3.0
    if math.isnan(bad):
        assert math.isnan(allowed[1].item())
    else:
        assert allowed[1].item() == bad


def test_largest_finite_values_are_accepted() -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        big = torch.full((1000,), torch.finfo(dtype).max, dtype=dtype)
        assert torch.equal(from_payload(to_payload(big)), big)


def test_too_many_elements_raise_payload_too_large() -> None:
    p = to_payload(torch.zeros(4, 5))
    assert from_payload(p, max_elements=20).shape == (4, 5)
    with pytest.raises(PayloadTooLargeError, match="20 elements, limit is 19"):
        from_payload(p, max_elements=19)


def test_bool_bytes_other_than_zero_or_one_raise_tensor_error() -> None:
    p = TensorPayload(dtype="bool", shape=(3,), data=b"\x00\x01\x02")
    with pytest.raises(TensorError, match="other than 0 and 1"):
        from_payload(p)

"""Tensors on the wire: dtype + shape + raw little-endian bytes (DESIGN §2.7).

A :class:`TensorPayload` is the only way a tensor travels between ELSA tiers: cut activations
and gradients of split training, and LoRA adapter tensors of the aggregation rounds. It holds
no pickle and no msgpack ext type, just a dtype name, a shape and the C-order buffer, so any
language can read it. Floating tensors are cast to the configured wire dtype
(:attr:`elsa.params.TransportParams.dtype`: fp32, fp16 or bf16) on the way out and back to the
compute dtype on the way in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from elsa.errors import PayloadTooLargeError, TensorError
from elsa.params import WireDType

__all__ = [
    "MAX_DIM",
    "MAX_NDIM",
    "TENSOR_DTYPES",
    "WIRE_DTYPE_NAMES",
    "TensorPayload",
    "from_payload",
    "payload_nbytes",
    "payloads_to_state",
    "state_to_payloads",
    "to_payload",
]

MAX_NDIM: Final = 32
"""Most dimensions a payload may have (numpy allows 64; no ELSA tensor has more than 4)."""

MAX_DIM: Final = 2**62
"""Largest single dimension accepted (keeps every size inside int64). The extent of a shape (its
size with empty dimensions counted as 1, what the strides of an empty tensor multiply up to) is
bounded by it too."""


@dataclass(frozen=True)
class _DTypeSpec:
    """How one wire dtype maps onto numpy and torch.

    ``numpy_le`` is the little-endian numpy dtype of the raw buffer; bfloat16 has no numpy
    dtype, so its buffer is read as ``<i2`` bits and reinterpreted by torch.
    """

    torch_dtype: torch.dtype
    numpy_le: str
    itemsize: int
    is_floating: bool


_SPECS: Final[dict[str, _DTypeSpec]] = {
    "float32": _DTypeSpec(torch.float32, "<f4", 4, True),
    "float16": _DTypeSpec(torch.float16, "<f2", 2, True),
    "bfloat16": _DTypeSpec(torch.bfloat16, "<i2", 2, True),
    "int64": _DTypeSpec(torch.int64, "<i8", 8, False),
    "int32": _DTypeSpec(torch.int32, "<i4", 4, False),
    "uint8": _DTypeSpec(torch.uint8, "|u1", 1, False),
    "bool": _DTypeSpec(torch.bool, "|b1", 1, False),
}

TENSOR_DTYPES: Final[tuple[str, ...]] = tuple(_SPECS)
"""Names a :attr:`TensorPayload.dtype` may take."""

WIRE_DTYPE_NAMES: Final[dict[str, str]] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""Wire dtype setting (:data:`elsa.params.WireDType`) → payload dtype name."""

_TORCH_TO_NAME: Final[dict[torch.dtype, str]] = {spec.torch_dtype: name for name, spec in _SPECS.items()}

# torch dtypes numpy can represent, for one-step copy+cast on decode.
_TORCH_TO_NUMPY: Final[dict[torch.dtype, str]] = {
    torch.float64: "=f8",
    torch.float32: "=f4",
    torch.float16: "=f2",
    torch.int64: "=i8",
    torch.int32: "=i4",
    torch.int16: "=i2",
    torch.int8: "=i1",
    torch.uint8: "=u1",
    torch.bool: "=b1",
}


class TensorPayload(BaseModel):
    """One tensor on the wire: dtype name, shape and the raw C-order little-endian buffer.

    ``data`` holds exactly ``prod(shape) * itemsize`` bytes; bfloat16 is stored as the raw
    2-byte bf16 bit patterns. Construction (and decoding) raises :class:`TensorError` for an
    unknown dtype, a negative or oversized dimension, or a buffer of the wrong length. Values
    are not inspected here (NaN/Inf are checked by :func:`from_payload`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    dtype: str = Field(
        description="Element type: one of float32, float16, bfloat16, int64, int32, uint8, bool.",
        examples=["float16"],
    )
    shape: tuple[int, ...] = Field(
        description="Tensor shape, outermost dimension first (C order).", examples=[[2, 16, 384]]
    )
    data: bytes = Field(
        repr=False,
        description="Raw little-endian C-order buffer of prod(shape) * itemsize bytes.",
    )

    @model_validator(mode="after")
    def _check_consistent(self) -> TensorPayload:
        spec = _SPECS.get(self.dtype)
        if spec is None:
            raise TensorError(f"unknown tensor dtype {self.dtype!r}; expected one of {list(_SPECS)}")
        if len(self.shape) > MAX_NDIM:
            raise TensorError(f"tensor has {len(self.shape)} dimensions, at most {MAX_NDIM} allowed")
        for dim in self.shape:
            if dim < 0 or dim > MAX_DIM:
                raise TensorError(f"tensor shape {self.shape} has a dimension outside [0, 2**62]")
        _check_extent(self.shape)
        expected = math.prod(self.shape) * spec.itemsize
        if len(self.data) != expected:
            raise TensorError(
                f"tensor data is {len(self.data)} bytes but dtype {self.dtype} and shape "
                f"{self.shape} need {expected}"
            )
        return self

    @property
    def numel(self) -> int:
        """Number of elements, ``prod(shape)``."""
        return math.prod(self.shape)


def _check_extent(shape: tuple[int, ...]) -> None:
    # an empty tensor holds no bytes, but its strides still multiply its other dimensions
    if math.prod(max(dim, 1) for dim in shape) > MAX_DIM:
        raise TensorError(f"tensor shape {shape} is too large (its dimensions multiply past 2**62)")


def payload_nbytes(p: TensorPayload) -> int:
    """Size of the raw tensor buffer in bytes (without dtype/shape/framing overhead)."""
    return len(p.data)


def _wire_torch_dtype(wire_dtype: WireDType) -> torch.dtype:
    name = WIRE_DTYPE_NAMES.get(wire_dtype)
    if name is None:
        raise TensorError(f"unknown wire dtype {wire_dtype!r}; expected fp32, fp16 or bf16")
    return _SPECS[name].torch_dtype


def to_payload(t: torch.Tensor, wire_dtype: WireDType | None = None) -> TensorPayload:
    """Serialise a tensor (any shape, any device) into a :class:`TensorPayload`.

    Floating tensors are cast to ``wire_dtype`` ("fp32" → float32, "fp16" → float16, "bf16" →
    bfloat16) when it is given, otherwise they must already be float32/float16/bfloat16.
    Integer and bool tensors keep their dtype (int64, int32, uint8, bool). The input is not
    mutated; it is detached, cast and moved to CPU in one step, and copied exactly once into
    the immutable ``bytes`` buffer. Raises :class:`TensorError` for an unsupported dtype.
    """
    src = t.detach()
    if src.is_floating_point() and wire_dtype is not None:
        target = _wire_torch_dtype(wire_dtype)
        src = src.to(device="cpu", dtype=target)
    else:
        src = src.cpu()
    name = _TORCH_TO_NAME.get(src.dtype)
    if name is None:
        hint = "; pass wire_dtype to cast floating tensors" if src.is_floating_point() else ""
        raise TensorError(f"tensor dtype {src.dtype} cannot travel on the wire{hint}")
    src = src.contiguous().resolve_conj().resolve_neg()
    shape = tuple(int(d) for d in src.shape)
    if src.numel() == 0:
        data = b""
    else:
        bits = src.view(torch.int16) if src.dtype == torch.bfloat16 else src
        arr = bits.numpy()
        # Little-endian hosts: a no-op view; big-endian hosts: one byte swap.
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return TensorPayload(dtype=name, shape=shape, data=data)


def _check_finite(arr: np.ndarray, dtype_name: str) -> None:
    if dtype_name == "bfloat16":
        # bf16 bits: exponent all ones (0x7F80 under the sign bit) means Inf or NaN.
        bad = bool(np.any((arr & 0x7F80) == 0x7F80))
    else:
        # A float64 sum of finite fp32/fp16 values cannot overflow, so it is finite iff all are
        # (Inf - Inf is NaN: no warning for that).
        with np.errstate(invalid="ignore"):
            bad = not math.isfinite(float(arr.sum(dtype=np.float64)))
    if bad:
        raise TensorError(f"tensor of dtype {dtype_name} contains NaN or Inf values")


def _check_shape(shape: tuple[int, ...], expected_shape: tuple[int | None, ...]) -> None:
    ok = len(shape) == len(expected_shape) and all(
        want is None or want == got for got, want in zip(shape, expected_shape, strict=False)
    )
    if not ok:
        pretty = ", ".join("*" if d is None else str(d) for d in expected_shape)
        raise TensorError(f"tensor shape {shape} does not match expected ({pretty})")


def _to_torch(arr: np.ndarray, dtype_name: str, target: torch.dtype | None) -> torch.Tensor:
    """Copy a read-only little-endian view into a fresh writable tensor, cast to ``target``."""
    source = _SPECS[dtype_name].torch_dtype
    if target is None or target == source:
        native = arr.astype(arr.dtype.newbyteorder("="), copy=True)
        out = torch.from_numpy(native)
        return out.view(torch.bfloat16) if dtype_name == "bfloat16" else out
    if dtype_name == "bfloat16" and target == torch.float32:
        # bf16 bits are the top half of the float32 bits: exact widening in one pass.
        widened = arr.view("<u2").astype("=u4") << np.uint32(16)
        return torch.from_numpy(widened.view("=f4"))
    target_np = _TORCH_TO_NUMPY.get(target)
    if target_np is not None and dtype_name != "bfloat16":
        return torch.from_numpy(arr.astype(target_np))
    return _to_torch(arr, dtype_name, None).to(target)


def from_payload(
    p: TensorPayload,
    *,
    dtype: torch.dtype | None = None,
    expected_shape: tuple[int | None, ...] | None = None,
    allow_nonfinite: bool = False,
    max_elements: int | None = None,
) -> torch.Tensor:
    """Rebuild a tensor of shape ``p.shape`` from a payload, checking it as untrusted input.

    Returns a fresh, writable CPU tensor (never aliasing ``p.data``; ``p`` is not mutated) of
    the payload's dtype, or cast to ``dtype`` when given (e.g. ``torch.float32`` for fp16/bf16
    cut tensors). Checks, in order: ``max_elements`` (:class:`PayloadTooLargeError`),
    ``expected_shape`` where ``None`` matches any size (:class:`TensorError`), bool bytes
    other than 0/1 (:class:`TensorError`), and NaN/Inf in floating payloads unless
    ``allow_nonfinite`` (:class:`TensorError`).
    """
    spec = _SPECS.get(p.dtype)
    if spec is None:  # only reachable for payloads built with model_construct
        raise TensorError(f"unknown tensor dtype {p.dtype!r}")
    numel = math.prod(p.shape)
    if max_elements is not None and numel > max_elements:
        raise PayloadTooLargeError(f"tensor of shape {p.shape} has {numel} elements, limit is {max_elements}")
    if expected_shape is not None:
        _check_shape(p.shape, expected_shape)
    if len(p.data) != numel * spec.itemsize:
        raise TensorError(
            f"tensor data is {len(p.data)} bytes but shape {p.shape} needs {numel * spec.itemsize}"
        )
    if numel == 0:
        _check_extent(p.shape)  # (payloads built with model_construct skip the validator)
        return torch.empty(p.shape, dtype=dtype if dtype is not None else spec.torch_dtype)
    if p.dtype == "bool" and int(np.frombuffer(p.data, dtype=np.uint8).max()) > 1:
        raise TensorError("bool tensor contains bytes other than 0 and 1")
    arr = np.frombuffer(p.data, dtype=np.dtype(spec.numpy_le)).reshape(p.shape)
    if spec.is_floating and not allow_nonfinite:
        _check_finite(arr, p.dtype)
    return _to_torch(arr, p.dtype, dtype)


def state_to_payloads(state: Mapping[str, torch.Tensor]) -> dict[str, TensorPayload]:
    """An adapter state (name -> tensor) as fp32 payloads for an adapter message; not mutated."""
    return {k: to_payload(v, "fp32") for k, v in state.items()}


def payloads_to_state(payloads: Mapping[str, TensorPayload]) -> dict[str, torch.Tensor]:
    """Fp32 tensors from an adapter message's payloads (each validated by :func:`from_payload`)."""
    return {k: from_payload(p, dtype=torch.float32) for k, p in payloads.items()}

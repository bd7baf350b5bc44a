"""Count sketches on the wire (DESIGN §2.7, §3): :class:`elsa.wire.SketchPayload` both ways.

A sketch travels as its geometry fields plus the table as a :class:`elsa.wire.TensorPayload`
of shape ``(rows, cols)`` (fp32 by default, fp16/bf16 on request). The receiver always states
the geometry it expects (from its own params, the run seed, the round and the adapter shapes)
and a sketch of any other geometry is refused with :class:`GeometryMismatchError` (409), never
merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError

from elsa.errors import AdapterMismatchError, ConfigError, DecodeError
from elsa.params import WireDType
from elsa.sketch.count_sketch import CountSketch
from elsa.sketch.geometry import SketchGeometry, check_same_geometry
from elsa.wire import SketchPayload, from_payload, to_payload

__all__ = ["sketch_from_payload", "sketch_to_payload", "sketches_from_payloads", "sketches_to_payloads"]


def sketch_to_payload(sketch: CountSketch, wire_dtype: WireDType = "fp32") -> SketchPayload:
    """The wire form of ``sketch`` (not mutated); ``wire_dtype`` casts the float32 table
    ("fp16"/"bf16" halve the bytes at the cost of rounding every cell)."""
    return SketchPayload(
        **sketch.geometry.to_dict(), table=to_payload(torch.from_numpy(sketch.table.copy()), wire_dtype)
    )


def sketch_from_payload(
    data: SketchPayload | Mapping[str, Any], expected_geometry: SketchGeometry
) -> CountSketch:
    """Rebuild and check an untrusted sketch against the geometry the receiver expects.

    ``data`` is a :class:`SketchPayload` or its dict form, validated strictly as the wire
    decoder does (no ``"5"`` for an int, no ``0`` for a bool). Raises
    :class:`DecodeError` (400) for a malformed payload, :class:`GeometryMismatchError` (409)
    when the declared geometry differs from ``expected_geometry`` in any field, and
    :class:`TensorError` (422) when the table's shape is not ``(rows, cols)`` or it holds
    NaN/Inf. Returns a float32 sketch of ``expected_geometry``; ``data`` is not mutated.
    """
    if isinstance(data, SketchPayload):
        payload = data
    else:
        try:
            payload = SketchPayload.model_validate(dict(data), strict=True)
        except (ValidationError, TypeError, ValueError) as exc:
            raise DecodeError(f"bad sketch payload: {exc}") from exc
    fields = payload.model_dump(exclude={"table"})
    try:
        declared = SketchGeometry.from_dict(fields)
    except ConfigError as exc:
        raise DecodeError(f"bad sketch geometry: {exc.detail}") from exc
    check_same_geometry(expected_geometry, declared)
    if payload.table.dtype not in ("float32", "float16", "bfloat16"):
        raise DecodeError(f"sketch table must be a floating tensor, got {payload.table.dtype}")
    table = from_payload(payload.table, dtype=torch.float32, expected_shape=expected_geometry.table_shape)
    return CountSketch(table.numpy(), expected_geometry)


def sketches_to_payloads(
    sketches: Mapping[str, CountSketch], wire_dtype: WireDType = "fp32"
) -> dict[str, SketchPayload]:
    """:func:`sketch_to_payload` of every key (sorted)."""
    return {key: sketch_to_payload(sketches[key], wire_dtype) for key in sorted(sketches)}


def sketches_from_payloads(
    payloads: Mapping[str, SketchPayload],
    expected: Mapping[str, SketchGeometry],
    *,
    exact_keys: bool = False,
) -> dict[str, CountSketch]:
    """Check and rebuild a received sketched state against the geometries the receiver expects.

    Every key must be expected (:class:`AdapterMismatchError`, 422, otherwise); with
    ``exact_keys`` every expected key must also be present. Geometry mismatch → 409.
    """
    unknown = sorted(set(payloads) - set(expected))
    if unknown:
        raise AdapterMismatchError(f"unexpected adapter keys {unknown[:3]} ({len(unknown)} in all)")
    if exact_keys and set(payloads) != set(expected):
        missing = sorted(set(expected) - set(payloads))
        raise AdapterMismatchError(f"missing adapter keys {missing[:3]} ({len(missing)} in all)")
    return {key: sketch_from_payload(payloads[key], expected[key]) for key in sorted(payloads)}

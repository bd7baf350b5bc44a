"""Count sketches on the wire (DESIGN §2.7, §3): geometry fields plus the table as a TensorPayload.

A sketch travels as a plain mapping ``{"geometry": {...}, "table": TensorPayload}`` that fits
inside ELSA's msgpack messages; the table is an ordinary :class:`elsa.wire.TensorPayload` of
shape ``(rows, cols)`` (fp32 by default, fp16/bf16 on request). The receiver always states the
geometry it expects (from its own params, run seed, round and adapter shapes) and a sketch of any
other geometry is refused with :class:`GeometryMismatchError` (409), never merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError

from elsa.errors import ConfigError, DecodeError
from elsa.params import WireDType
from elsa.sketch.count_sketch import CountSketch
from elsa.sketch.geometry import SketchGeometry, check_same_geometry
from elsa.wire import TensorPayload, from_payload, to_payload

__all__ = ["sketch_from_payload", "sketch_to_payload"]


def sketch_to_payload(sketch: CountSketch, wire_dtype: WireDType = "fp32") -> dict[str, Any]:
    """``{"geometry": plain dict, "table": TensorPayload (rows, cols)}``; the sketch is not mutated.

    ``wire_dtype`` casts the float32 table for transport ("fp16"/"bf16" halve the bytes at the
    cost of rounding every cell).
    """
    return {
        "geometry": sketch.geometry.to_dict(),
        "table": to_payload(torch.from_numpy(sketch.table.copy()), wire_dtype),
    }


def sketch_from_payload(data: Mapping[str, Any], expected_geometry: SketchGeometry) -> CountSketch:
    """Rebuild and check an untrusted sketch against the geometry the receiver expects.

    ``data["table"]`` may be a :class:`TensorPayload` or its dict form. Raises
    :class:`DecodeError` (400) for a malformed mapping, :class:`GeometryMismatchError` (409)
    when the declared geometry differs from ``expected_geometry`` in any field, and
    :class:`TensorError` (422) when the table's shape is not ``(rows, cols)`` or it holds NaN/Inf.
    Returns a float32 sketch of ``expected_geometry``; ``data`` is not mutated.
    """
    if not isinstance(data, Mapping) or set(data) != {"geometry", "table"}:
        raise DecodeError("a sketch payload needs exactly the keys 'geometry' and 'table'")
    raw_geometry = data["geometry"]
    if not isinstance(raw_geometry, Mapping):
        raise DecodeError("sketch 'geometry' must be a mapping")
    try:
        declared = SketchGeometry.from_dict(dict(raw_geometry))
    except ConfigError as exc:
        raise DecodeError(f"bad sketch geometry: {exc.detail}") from exc
    check_same_geometry(expected_geometry, declared)
    raw_table = data["table"]
    if isinstance(raw_table, TensorPayload):
        payload = raw_table
    elif isinstance(raw_table, Mapping):
        try:
            payload = TensorPayload.model_validate(dict(raw_table))
        except ValidationError as exc:
            raise DecodeError(f"bad sketch table payload: {exc.error_count()} invalid field(s)") from exc
    else:
        raise DecodeError("sketch 'table' must be a tensor payload")
    if payload.dtype not in ("float32", "float16", "bfloat16"):
        raise DecodeError(f"sketch table must be a floating tensor, got {payload.dtype}")
    table = from_payload(payload, dtype=torch.float32, expected_shape=expected_geometry.table_shape)
    return CountSketch(table.numpy(), expected_geometry)

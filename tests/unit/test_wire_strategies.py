"""Hypothesis strategies for elsa.wire, shared by the wire tests, and checks of the strategies.

Payloads are built from real numpy arrays (bfloat16 from raw 16-bit patterns), independently of
``to_payload``, so round-trip tests do not test the code with itself. Sketch payloads always have
a consistent geometry (``SketchGeometry`` accepts it) and a floating ``(rows, cols)`` table;
adapter broadcasts always satisfy ``AdapterBroadcast``'s rules (sketches need a
``base_version``; a key is a full value or a sketched delta, never both).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import find, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from elsa.sketch import SketchGeometry
from elsa.wire import (
    MESSAGE_TYPES,
    TENSOR_DTYPES,
    AdapterBroadcast,
    AdapterUpdate,
    BackwardRequest,
    BackwardResponse,
    ErrorMessage,
    ForwardRequest,
    ForwardResponse,
    Message,
    ProbeReport,
    SketchPayload,
    TensorPayload,
)

NUMPY_LE = {
    "float32": "<f4",
    "float16": "<f2",
    "bfloat16": "<u2",  # raw bf16 bit patterns
    "int64": "<i8",
    "int32": "<i4",
    "uint8": "|u1",
    "bool": "|b1",
}
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "uint8": 1, "bool": 1}


@st.composite
def tensor_payloads(
    draw: st.DrawFn, dtypes: tuple[str, ...] = TENSOR_DTYPES, max_dims: int = 3, max_side: int = 4
) -> TensorPayload:
    """A payload of a random dtype and small shape (0-d and empty included), from a numpy array."""
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))
    arr = draw(hnp.arrays(np.dtype(NUMPY_LE[dtype]), shape))
    return TensorPayload(dtype=dtype, shape=tuple(shape), data=arr.tobytes())


ids = st.text(min_size=1, max_size=24)
counts = st.integers(min_value=0, max_value=2**63 - 1)
names = st.text(min_size=1, max_size=40)
tensor_dicts = st.dictionaries(names, tensor_payloads(), max_size=3)
losses = st.none() | st.floats(allow_nan=False, allow_infinity=False)

SKETCH_TABLE_DTYPES = ("float32", "float16", "bfloat16")
seeds = st.integers(min_value=-(2**63), max_value=2**64 - 1)


@st.composite
def sketch_payloads(
    draw: st.DrawFn,
    tensor: str | None = None,
    dtypes: tuple[str, ...] = SKETCH_TABLE_DTYPES,
    max_side: int = 6,
) -> SketchPayload:
    """A sketch of a consistent geometry: dense (one row, ``cols == length``) or sketched
    (``rows x cols`` of any ``length``), with a floating ``(rows, cols)`` table from numpy."""
    dense = draw(st.booleans())
    if dense:
        rows = 1
        cols = length = draw(st.integers(min_value=1, max_value=max_side))
    else:
        rows = draw(st.integers(min_value=1, max_value=4))
        cols = draw(st.integers(min_value=1, max_value=max_side))
        length = draw(st.integers(min_value=1, max_value=2**40))
    dtype = draw(st.sampled_from(dtypes))
    table = draw(hnp.arrays(np.dtype(NUMPY_LE[dtype]), (rows, cols)))
    return SketchPayload(
        rows=rows,
        cols=cols,
        length=length,
        seed=draw(seeds),
        round=draw(counts),
        tensor=draw(names) if tensor is None else tensor,
        dense=dense,
        table=TensorPayload(dtype=dtype, shape=(rows, cols), data=table.tobytes()),
    )


@st.composite
def sketch_dicts(
    draw: st.DrawFn, exclude: frozenset[str] = frozenset(), max_size: int = 3
) -> dict[str, SketchPayload]:
    """Sketches by adapter key (each sketch hashed for its own key), no key from ``exclude``."""
    keys = draw(st.lists(names.filter(lambda k: k not in exclude), max_size=max_size, unique=True))
    return {key: draw(sketch_payloads(tensor=key)) for key in keys}


@st.composite
def adapter_broadcasts(draw: st.DrawFn) -> AdapterBroadcast:
    """Full values and/or sketched deltas on disjoint keys; a base_version whenever sketched."""
    tensors = draw(tensor_dicts)
    sketches = draw(sketch_dicts(exclude=frozenset(tensors)))
    base_version = draw(counts if sketches else st.none() | counts)
    return AdapterBroadcast(
        run_id=draw(ids),
        round=draw(counts),
        version=draw(counts),
        tensors=tensors,
        sketches=sketches,
        base_version=base_version,
    )


MESSAGE_STRATEGIES: dict[str, st.SearchStrategy[Message]] = {
    "forward_request": st.builds(
        ForwardRequest,
        session_id=ids,
        step=counts,
        activations=tensor_payloads(),
        attention_mask=tensor_payloads(("int64", "bool", "uint8")),
    ),
    "forward_response": st.builds(
        ForwardResponse, session_id=ids, step=counts, activations=tensor_payloads()
    ),
    "backward_request": st.builds(BackwardRequest, session_id=ids, step=counts, grad=tensor_payloads()),
    "backward_response": st.builds(BackwardResponse, session_id=ids, step=counts, grad=tensor_payloads()),
    "adapter_update": st.builds(
        AdapterUpdate,
        node_id=ids,
        run_id=ids,
        round=counts,
        num_examples=counts,
        sketches=sketch_dicts(),
        loss=losses,
        weight=st.none() | st.floats(min_value=0, max_value=1e12),
    ),
    "probe_report": st.builds(
        ProbeReport,
        node_id=ids,
        run_id=ids,
        round=counts,
        predictions=tensor_payloads(),
        mu=st.none() | tensor_payloads(),
        sigma=st.none() | tensor_payloads(),
    ),
    "adapter_broadcast": adapter_broadcasts(),
    "error": st.builds(ErrorMessage, error=st.text(max_size=30), detail=st.text(max_size=200)),
}

messages: st.SearchStrategy[Message] = st.one_of(*MESSAGE_STRATEGIES.values())


def test_strategies_cover_every_message_type() -> None:
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_TYPES)


@given(st.data())
def test_each_strategy_builds_its_own_type(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(MESSAGE_STRATEGIES)))
    msg = data.draw(MESSAGE_STRATEGIES[kind])
    assert type(msg) is MESSAGE_TYPES[kind]
    assert msg.kind == kind


@given(tensor_payloads())
def test_payload_strategy_is_consistent(p: TensorPayload) -> None:
    assert p.dtype in TENSOR_DTYPES
    assert len(p.data) == math.prod(p.shape) * ITEMSIZE[p.dtype]


@given(sketch_payloads())
def test_sketch_payload_strategy_is_consistent(p: SketchPayload) -> None:
    geometry = SketchGeometry.from_dict(p.model_dump(exclude={"table"}))  # a valid geometry
    assert p.table.shape == geometry.table_shape
    assert p.table.dtype in SKETCH_TABLE_DTYPES
    assert len(p.table.data) == p.rows * p.cols * ITEMSIZE[p.table.dtype]
    if p.dense:
        assert (p.rows, p.cols) == (1, p.length)


@given(MESSAGE_STRATEGIES["adapter_update"])
def test_update_strategy_hashes_each_sketch_for_its_key(msg: AdapterUpdate) -> None:
    assert all(sketch.tensor == key for key, sketch in msg.sketches.items())


@given(MESSAGE_STRATEGIES["adapter_broadcast"])
def test_broadcast_strategy_keeps_the_broadcast_rules(msg: AdapterBroadcast) -> None:
    assert not set(msg.tensors) & set(msg.sketches)
    if msg.sketches:
        assert msg.base_version is not None
    assert all(sketch.tensor == key for key, sketch in msg.sketches.items())


def test_broadcast_strategy_reaches_values_sketches_and_both() -> None:
    strategy = MESSAGE_STRATEGIES["adapter_broadcast"]
    # find raises NoSuchExample when the strategy never produces a case.
    find(strategy, lambda m: bool(m.tensors) and not m.sketches and m.base_version is None)
    find(strategy, lambda m: bool(m.sketches) and not m.tensors)
    find(strategy, lambda m: bool(m.tensors) and bool(m.sketches))

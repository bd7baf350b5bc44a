"""Hypothesis strategies for elsa.wire, shared by the wire tests, and checks of the strategies.

Payloads are built from real numpy arrays (bfloat16 from raw 16-bit patterns), independently of
``to_payload``, so round-trip tests do not test the code with itself.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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
tensor_dicts = st.dictionaries(st.text(min_size=1, max_size=40), tensor_payloads(), max_size=3)
losses = st.none() | st.floats(allow_nan=False, allow_infinity=False)

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
        tensors=tensor_dicts,
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
    "adapter_broadcast": st.builds(
        AdapterBroadcast, run_id=ids, round=counts, version=counts, tensors=tensor_dicts
    ),
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

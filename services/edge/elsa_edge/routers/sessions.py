"""Split sessions (DESIGN §2.7, §2.8): open, forward/backward frames, updates, edge models."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

import torch
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from elsa.errors import AuthError, ConflictError, ElsaError, NotFoundError, TensorError
from elsa.infra.web import (
    ERROR_RESPONSES,
    FRAMES,
    bearer_token,
    msgpack_response,
    read_body,
    same_secret,
    token_hash,
    wait_until,
)
from elsa.runtime.exchange import broadcast_message, read_update
from elsa.wire import (
    AdapterUpdate,
    BackwardRequest,
    BackwardResponse,
    ForwardRequest,
    ForwardResponse,
    FrameDecoder,
    Message,
    decode,
    encode,
    encode_frames,
    from_payload,
    to_payload,
)
from elsa_edge.deps import CloudDep, SessionDep, SettingsDep, StateDep
from elsa_edge.state import EdgeState, ServedRound, Session
from elsa_edge.workflows.serve import finish_edge_round

M = TypeVar("M", bound=Message)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=ERROR_RESPONSES)


class OpenSession(BaseModel):
    """A device opens its split session for a round (bearer = its session token)."""

    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(min_length=1, max_length=128)
    round: int = Field(ge=1)
    device_id: str = Field(min_length=1, max_length=128)


class SessionOpened(BaseModel):
    """The id to use in the session's URLs."""

    session_id: str
    head_blocks: int
    tail_blocks: int


@router.post("", response_model=SessionOpened, summary="Open a split session")
def open_session(body: OpenSession, request: Request, state: StateDep) -> SessionOpened:
    """Only the device the cloud assigned to this edge (holding the round's session token) may
    open a session; a re-open replaces the previous session of that device."""
    token = bearer_token(request)
    served = state.rounds.get(body.run_id)
    if served is None or served.edge_round.round_index != body.round:
        raise NotFoundError(f"this edge does not serve round {body.round} of run {body.run_id}")
    expected = served.tokens.get(body.device_id)
    if expected is None:
        raise AuthError(f"device {body.device_id} is not assigned to this edge")
    if not same_secret(token_hash(token), expected):
        raise AuthError("session token does not match")
    split = served.split_of(body.device_id)
    with state.state_lock:
        served.edge_round.open_session(body.device_id, served.model.segments(split))
        for sid in [
            s for s, v in state.sessions.items() if v.device_id == body.device_id and v.run_id == body.run_id
        ]:
            del state.sessions[sid]
        session_id = f"s-{secrets.token_hex(8)}"
        state.sessions[session_id] = Session(session_id, body.device_id, body.run_id, body.round, expected)
    state.metrics.sessions_opened.inc()
    return SessionOpened(session_id=session_id, head_blocks=split.head_blocks, tail_blocks=split.tail_blocks)


def _frames_response(message: Message, state: EdgeState, kind: str) -> Response:
    content = b"".join(bytes(f) for f in encode_frames(message))
    state.count_out(kind, len(content))
    return Response(content=content, media_type=FRAMES)


def _timed(state: EdgeState, phase: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run a body step under the compute lock, timing the wait and the compute."""
    queued = time.perf_counter()
    with state.compute_lock:
        started = time.perf_counter()
        state.metrics.lock_wait_seconds.labels(phase).observe(started - queued)
        result = compute()
    state.metrics.step_seconds.labels(phase).observe(time.perf_counter() - started)
    return result


async def _read_one(request: Request, max_bytes: int, expected: type[M]) -> M:
    body = await read_body(request, max_bytes)
    decoder = FrameDecoder(expected=expected, max_message_bytes=max_bytes)
    messages = decoder.feed(body)
    decoder.finish()
    if len(messages) != 1 or not isinstance(messages[0], expected):
        raise ConflictError(f"expected exactly one {expected.kind} message, got {len(messages)}")
    return messages[0]


def _check_session_id(message_session: str, session: Session) -> None:
    if message_session != session.session_id:
        raise ConflictError("message session_id does not match the URL")


@router.post("/{session_id}/forward", summary="Body forward (frames in, frames out)")
async def forward(
    session_id: str,
    request: Request,
    ctx: SessionDep,
    state: StateDep,
    settings: SettingsDep,
    inference: Annotated[bool, Query(description="no graph kept, no training")] = False,
) -> Response:
    """Lower-cut activations (B x S x d, wire dtype) + mask -> upper-cut activations."""
    session, served = ctx
    message = await _read_one(request, settings.max_body_bytes, ForwardRequest)
    _check_session_id(message.session_id, session)
    hidden = served.model.task_model.hidden_size
    lower = from_payload(message.activations, dtype=torch.float32, expected_shape=(None, None, hidden))
    if lower.shape[0] == 0 or lower.shape[1] == 0:
        raise TensorError(
            f"activations of shape {tuple(lower.shape)}: need at least one example and position"
        )
    mask = from_payload(message.attention_mask, expected_shape=lower.shape[:2]).to(torch.long)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise TensorError("attention_mask must hold 0/1")
    if not inference and not state.is_current(served):
        raise ConflictError(f"round {session.round_index} is closed; only inference is served")
    stepper = served.edge_round.session(session.device_id)
    step = -1 if inference else message.step

    upper = await run_in_threadpool(
        _timed, state, "inference" if inference else "forward", lambda: stepper.forward(step, lower, mask)
    )
    if step >= 0:
        session.pending = (step, tuple(upper.shape))
    state.count_in("inference_activations" if inference else "activations", len(message.activations.data))
    reply = ForwardResponse(
        session_id=session.session_id,
        step=message.step,
        activations=to_payload(upper, served.config.transport.dtype),
    )
    return _frames_response(reply, state, "inference_activations" if inference else "activations")


@router.post("/{session_id}/backward", summary="Body backward (frames in, frames out)")
async def backward(
    session_id: str, request: Request, ctx: SessionDep, state: StateDep, settings: SettingsDep
) -> Response:
    """Gradient at the upper cut -> gradient at the lower cut; steps the session's body LoRA."""
    session, served = ctx
    if not state.is_current(served):
        raise ConflictError(f"round {session.round_index} is closed; only inference is served")
    message = await _read_one(request, settings.max_body_bytes, BackwardRequest)
    _check_session_id(message.session_id, session)
    stepper = served.edge_round.session(session.device_id)
    expected: tuple[int | None, ...] = (None, None, served.model.task_model.hidden_size)
    if session.pending is not None and session.pending[0] == message.step:
        expected = session.pending[1]  # the gradient must match the pending forward's output
    grad = from_payload(message.grad, dtype=torch.float32, expected_shape=expected)

    lower_grad = await run_in_threadpool(
        _timed, state, "backward", lambda: stepper.backward(message.step, grad)
    )
    session.pending = None
    state.count_in("gradients", len(message.grad.data))
    reply = BackwardResponse(
        session_id=session.session_id,
        step=message.step,
        grad=to_payload(lower_grad, served.config.transport.dtype),
    )
    return _frames_response(reply, state, "gradients")


@router.post("/{session_id}/updates", summary="Submit the device's head/tail after an edge round")
async def submit_update(
    session_id: str,
    request: Request,
    ctx: SessionDep,
    state: StateDep,
    settings: SettingsDep,
    cloud: CloudDep,
    edge_round: Annotated[int, Query(ge=0)],
) -> dict[str, bool]:
    """msgpack ``AdapterUpdate`` with exactly the device's head/tail keys and shapes."""
    session, served = ctx
    body = await read_body(request, settings.max_body_bytes)
    update = decode(body, AdapterUpdate, max_bytes=settings.max_body_bytes)
    if (
        update.node_id != session.device_id
        or update.run_id != session.run_id
        or update.round != session.round_index
    ):
        raise ConflictError("update does not belong to this session's device, run and round")
    if edge_round >= served.config.train.edge_rounds:
        raise ConflictError(
            f"edge_round {edge_round} out of range (tau2 = {served.config.train.edge_rounds})"
        )
    keys = served.device_keys(session.device_id)
    delta = read_update(update, served.edge_round.start, served.config, keys=keys)
    with state.state_lock:
        served.edge_round.submit(session.device_id, edge_round, delta, update.num_examples)
        first = edge_round not in served.first_submit_at
        served.first_submit_at.setdefault(edge_round, time.monotonic())
        complete = served.edge_round.complete(edge_round)
    if complete:
        try:
            await run_in_threadpool(finish_edge_round, state, cloud, served, edge_round)
        except ElsaError:
            # the edge round cannot be aggregated with this update (e.g. the merged sketch
            # overflows its table dtype): refuse it as if it had never been submitted
            with state.state_lock:
                _withdraw(served, session.device_id, edge_round, first)
            raise
    state.count_in("adapters", len(body))
    return {"ok": True}


def _withdraw(served: ServedRound, device_id: str, edge_round: int, first: bool) -> None:
    """Forget a device's submission of an edge round that is not aggregated."""
    if edge_round in served.edge_round.models:
        return
    submissions = served.edge_round.submissions.get(edge_round, {})
    submissions.pop(device_id, None)
    if not submissions:
        served.edge_round.submissions.pop(edge_round, None)
        if first:
            served.first_submit_at.pop(edge_round, None)


@router.get(
    "/{session_id}/model",
    summary="Long-poll the aggregated model of an edge round",
    responses={200: {"content": {"application/msgpack": {}}}, 204: {"description": "not ready yet"}},
)
async def edge_model(
    session_id: str,
    ctx: SessionDep,
    state: StateDep,
    edge_round: Annotated[int, Query(ge=0)],
    wait_s: Annotated[float, Query(ge=0, le=120)] = 20.0,
) -> Response:
    """``AdapterBroadcast`` of the device's head/tail keys once the edge round is aggregated:
    its cluster's merged sketches (deltas on the round's start version) or full values."""
    session, served = ctx
    ready = await wait_until(lambda: edge_round in served.edge_round.models, wait_s)
    if not ready:
        return Response(status_code=204)
    sketches, values = served.edge_round.device_broadcast(
        session.device_id, edge_round, served.device_keys(session.device_id)
    )
    message = broadcast_message(
        dtype=served.config.sketch_params().table_dtype,
        run_id=session.run_id,
        round_index=session.round_index,
        version=edge_round,
        sketches=sketches,
        values=values,
        base_version=served.version,
    )
    data = encode(message)
    state.count_out("adapters", len(data))
    return msgpack_response(data)

"""Edge: probes, split sessions (forward/backward frames), updates and edge models.

The worker is off (``autostart=False``); each test serves round 1 of a run to two devices with a
tiny random BERT put straight into the edge state, as the worker would after a ``serve`` task.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import torch

from elsa.infra.web import token_hash
from elsa.model.split import SplitModel
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.exchange import read_broadcast, read_update
from elsa.runtime.rounds import EdgeRound
from elsa.sketch import apply_sketches, sketch_state, sketches_to_payloads
from elsa.wire import (
    AdapterBroadcast,
    AdapterUpdate,
    BackwardRequest,
    BackwardResponse,
    ForwardRequest,
    ForwardResponse,
    FrameDecoder,
    Message,
    TensorPayload,
    decode,
    encode,
    encode_frames,
    from_payload,
    to_payload,
)
from elsa.wire.control import NodeIdentity
from elsa_edge.main import create_app
from elsa_edge.settings import EdgeSettings
from elsa_edge.state import EdgeState, ServedRound

from .support import HIDDEN, assert_error, bearer, serve, tiny_split_model

pytestmark = pytest.mark.anyio

RUN = "api-run"
DEVICES = ("device-000", "device-001")
MAX_BODY = 256 * 1024
FRAMES = {"content-type": "application/x-elsa-frames"}
MSGPACK = {"content-type": "application/msgpack"}


@functools.cache
def edge_model() -> SplitModel:
    # shared: sessions never change the model's own parameters (they run with their own copies)
    return tiny_split_model()


def edge_config(name: str = "api") -> RunConfig:
    return parse_config(
        {
            "name": name,
            "model": {"name": "tiny", "num_labels": 3, "head_blocks": 1, "tail_blocks": 1},
            "topology": {"edges": 1, "devices_per_edge": 2},
            "train": {"edge_rounds": 2, "local_steps": 1, "cloud_rounds": 1},
            "transport": {"dtype": "fp32"},
        }
    )


def served_round(
    config: RunConfig, run_id: str, devices: tuple[str, ...], tokens: dict[str, str]
) -> ServedRound:
    """Round 1 of ``run_id`` as the edge worker sets it up after a ``serve`` task (the run's
    sketch params and seed), nothing submitted yet; ``tokens`` are the devices' session tokens."""
    model = edge_model()
    edge_round = EdgeRound(
        run_id,
        1,
        devices,
        model.initial_state(),
        config.train_params(),
        sketch=config.sketch_params(),
        seed=config.seed,
    )
    hashes = {d: token_hash(t) for d, t in tokens.items()}
    return ServedRound(config, model, edge_round, hashes, time.monotonic())


@dataclass
class Edge:
    """A running edge app serving round 1 of RUN to DEVICES."""

    app: Any
    client: httpx.AsyncClient
    state: EdgeState
    served: ServedRound
    tokens: dict[str, str]

    def auth(self, device: str) -> dict[str, str]:
        return bearer(self.tokens[device])

    async def open(self, device: str = DEVICES[0]) -> str:
        response = await self.client.post(
            "/v1/sessions", json={"run_id": RUN, "round": 1, "device_id": device}, headers=self.auth(device)
        )
        assert response.status_code == 200, response.text
        return str(response.json()["session_id"])

    async def post_frames(
        self, sid: str, what: str, body: bytes, device: str = DEVICES[0], query: str = ""
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/sessions/{sid}/{what}{query}", content=body, headers={**FRAMES, **self.auth(device)}
        )

    async def submit(
        self, sid: str, body: bytes, edge_round: int = 0, device: str = DEVICES[0]
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/sessions/{sid}/updates",
            params={"edge_round": edge_round},
            content=body,
            headers={**MSGPACK, **self.auth(device)},
        )

    async def model(self, sid: str, edge_round: int, device: str = DEVICES[0]) -> httpx.Response:
        return await self.client.get(
            f"/v1/sessions/{sid}/model",
            params={"edge_round": edge_round, "wait_s": 0},
            headers=self.auth(device),
        )

    def device_keys(self) -> tuple[str, ...]:
        return self.served.model.segments(self.served.config.split_params()).device_keys()


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    settings = EdgeSettings(autostart=False, cloud_url="http://127.0.0.1:9", max_body_bytes=MAX_BODY)
    app = create_app(settings)
    app.state.cloud.backoff_s = 0.01  # the unreachable cloud fails fast
    tokens = {d: f"session-token-of-{d}" for d in DEVICES}
    served = served_round(edge_config(), RUN, DEVICES, tokens)
    state: EdgeState = app.state.edge
    state.node_id = "edge-edge-0-test"
    state.models[RUN] = served.model
    state.rounds[RUN] = served
    async with serve(app) as client:
        yield Edge(app, client, state, served, tokens)


def frames(message: Message) -> bytes:
    return b"".join(bytes(piece) for piece in encode_frames(message))


def unframe(response: httpx.Response, expected: type[Message]) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-elsa-frames"
    decoder = FrameDecoder(expected=expected)
    messages = decoder.feed(response.content)
    decoder.finish()
    assert len(messages) == 1
    return messages[0]


def activations(batch: int = 2, seq: int = 5, hidden: int = HIDDEN, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, seq, hidden, generator=torch.Generator().manual_seed(seed))


def forward_request(
    sid: str, step: int = 0, x: torch.Tensor | None = None, mask: torch.Tensor | None = None
) -> ForwardRequest:
    x = activations() if x is None else x
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.uint8)
        mask[-1, -2:] = 0  # a right-padded row
    return ForwardRequest(
        session_id=sid, step=step, activations=to_payload(x, "fp32"), attention_mask=to_payload(mask)
    )


def device_delta(edge: Edge, value: float = 0.01) -> dict[str, torch.Tensor]:
    """A trained-minus-start delta over the device's head/tail keys, ``value`` everywhere."""
    start = edge.served.edge_round.start
    return {k: torch.full_like(start[k], value) for k in edge.device_keys()}


def device_update(
    edge: Edge,
    *,
    delta: dict[str, torch.Tensor] | None = None,
    sketch_round: int | None = None,
    seed: int | None = None,
    **fields: Any,
) -> AdapterUpdate:
    """A device's update: the sketches of its delta in the served round's geometry (or in that
    of ``sketch_round`` / run ``seed`` when given)."""
    served = edge.served.edge_round
    changes = delta if delta is not None else device_delta(edge)
    sketches = sketch_state(
        changes,
        served.sketch,
        served.round_index if sketch_round is None else sketch_round,
        served.seed if seed is None else seed,
    )
    values: dict[str, Any] = {
        "node_id": DEVICES[0],
        "run_id": RUN,
        "round": 1,
        "num_examples": 4,
        "sketches": sketches_to_payloads(sketches),
        **fields,
    }
    return AdapterUpdate(**values)


# ----------------------------------------------------------------------------- probes, health


NODE_TOKEN = "node-token-of-device-000"


def known_node(edge: Edge) -> dict[str, str]:
    """A device token the edge has already identified with the cloud (cached answer)."""
    identity = NodeIdentity(node_id="device-device-000-x", role="device", name="device-000")
    edge.state.identities.put(token_hash(NODE_TOKEN), identity)
    return bearer(NODE_TOKEN)


async def test_ping(edge: Edge) -> None:
    auth = known_node(edge)
    pong = await edge.client.get("/v1/ping", headers=auth)
    assert pong.status_code == 200 and pong.json() == {"ok": True}
    payload = await edge.client.post("/v1/ping", content=bytes(10_000), headers=auth)
    assert payload.status_code == 200 and payload.json() == {"received": 10_000}


async def test_ping_needs_a_node_token_the_cloud_knows(edge: Edge) -> None:
    assert_error(await edge.client.get("/v1/ping"), 401, "unauthorized")
    assert_error(await edge.client.post("/v1/ping", content=bytes(100)), 401, "unauthorized")
    # a token the edge has not seen: it must ask the cloud, which is unreachable here -> 503
    response = await edge.client.get("/v1/ping", headers=bearer("some-other-token"))
    assert_error(response, 503, "unavailable")
    assert (await edge.client.get("/health")).status_code == 200


async def test_a_client_that_disconnects_mid_upload_is_not_a_server_error(edge: Edge) -> None:
    known_node(edge)
    sent: list[dict[str, Any]] = []
    chunks = iter(
        [{"type": "http.request", "body": bytes(1000), "more_body": True}, {"type": "http.disconnect"}]
    )

    async def receive() -> dict[str, Any]:
        return next(chunks)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/ping",
        "raw_path": b"/v1/ping",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {NODE_TOKEN}".encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        "state": {},
    }
    await edge.app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    assert status == 400
    assert (await edge.client.get("/health")).status_code == 200


async def test_ping_payload_over_the_limit_is_413(edge: Edge) -> None:
    auth = known_node(edge)
    response = await edge.client.post("/v1/ping", content=bytes(MAX_BODY + 1), headers=auth)
    assert_error(response, 413, "payload_too_large", mentions=str(MAX_BODY))

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the streamed check
        for _ in range(5):
            yield bytes(MAX_BODY // 4)

    response = await edge.client.post("/v1/ping", content=chunks(), headers=auth)
    assert_error(response, 413, "payload_too_large")
    assert (await edge.client.get("/health")).status_code == 200


async def test_health_ready_status(edge: Edge) -> None:
    health = await edge.client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["node_id"] == "edge-edge-0-test"
    ready = await edge.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"cloud": "joined"}
    status = (await edge.client.get("/v1/status")).json()
    assert status["runs"][RUN]["round"] == 1
    assert status["runs"][RUN]["devices"] == list(DEVICES)
    assert status["runs"][RUN]["sessions"] == [] and status["runs"][RUN]["uploaded"] is False


async def test_ready_is_degraded_before_joining() -> None:
    app = create_app(EdgeSettings(autostart=False, cloud_url="http://127.0.0.1:9"))
    async with serve(app) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"] == {"cloud": "not joined"}
        assert (await client.get("/v1/status")).json()["runs"] == {}


# ----------------------------------------------------------------------------------- sessions


async def test_open_session(edge: Edge) -> None:
    response = await edge.client.post(
        "/v1/sessions",
        json={"run_id": RUN, "round": 1, "device_id": DEVICES[0]},
        headers=edge.auth(DEVICES[0]),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["head_blocks"] == 1 and body["tail_blocks"] == 1
    assert body["session_id"] in edge.state.sessions
    # a re-open replaces the device's previous session
    again = await edge.open(DEVICES[0])
    assert set(edge.state.sessions) == {again}
    assert_error(await edge.model(body["session_id"], 0), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "token", "status", "code"),
    [
        ({"run_id": RUN, "round": 1, "device_id": DEVICES[0]}, "wrong-token", 401, "unauthorized"),
        ({"run_id": RUN, "round": 1, "device_id": DEVICES[0]}, None, 401, "unauthorized"),
        # a valid token of another device does not open this device's session
        ({"run_id": RUN, "round": 1, "device_id": DEVICES[0]}, DEVICES[1], 401, "unauthorized"),
        ({"run_id": RUN, "round": 1, "device_id": "device-999"}, DEVICES[0], 401, "unauthorized"),
        ({"run_id": "no-such-run", "round": 1, "device_id": DEVICES[0]}, DEVICES[0], 404, "not_found"),
        ({"run_id": RUN, "round": 2, "device_id": DEVICES[0]}, DEVICES[0], 404, "not_found"),
        ({"run_id": RUN, "round": 0, "device_id": DEVICES[0]}, DEVICES[0], 422, "invalid_request"),
        ({"run_id": RUN, "device_id": DEVICES[0]}, DEVICES[0], 422, "invalid_request"),
        ({"run_id": RUN, "round": 1, "device_id": DEVICES[0], "x": 1}, DEVICES[0], 422, "invalid_request"),
    ],
)
async def test_open_session_refusals(
    edge: Edge, body: dict[str, Any], token: str | None, status: int, code: str
) -> None:
    if token is None:
        headers = {}
    elif token in edge.tokens:
        headers = edge.auth(token)
    else:
        headers = bearer(token)
    response = await edge.client.post("/v1/sessions", json=body, headers=headers)
    assert_error(response, status, code)
    assert edge.state.sessions == {}
    assert edge.served.edge_round.sessions == {}


async def test_session_endpoints_check_the_session_token(edge: Edge) -> None:
    sid = await edge.open(DEVICES[0])
    body = frames(forward_request(sid))
    assert_error(await edge.post_frames("s-unknown", "forward", body), 404, "not_found")
    other = await edge.post_frames(sid, "forward", body, device=DEVICES[1])
    assert_error(other, 401, "unauthorized")
    response = await edge.client.post(f"/v1/sessions/{sid}/forward", content=body, headers=FRAMES)
    assert_error(response, 401, "unauthorized")
    assert_error(await edge.model(sid, 0, device=DEVICES[1]), 401, "unauthorized")
    assert edge.state.bytes_in == 0


# ---------------------------------------------------------------------------- forward/backward


async def test_forward_backward_round_trip(edge: Edge) -> None:
    sid = await edge.open()
    stepper = edge.served.edge_round.sessions[DEVICES[0]]
    body_before = {k: v.detach().clone() for k, v in stepper.state.items()}
    x = activations(batch=3, seq=6)
    reply: ForwardResponse = unframe(
        await edge.post_frames(sid, "forward", frames(forward_request(sid, 0, x))), ForwardResponse
    )
    assert reply.session_id == sid and reply.step == 0
    upper = from_payload(reply.activations, dtype=torch.float32)
    assert upper.shape == (3, 6, HIDDEN) and bool(torch.isfinite(upper).all())
    assert not torch.equal(upper, x)

    grad = torch.randn(3, 6, HIDDEN, generator=torch.Generator().manual_seed(1))
    request = BackwardRequest(session_id=sid, step=0, grad=to_payload(grad, "fp32"))
    back: BackwardResponse = unframe(
        await edge.post_frames(sid, "backward", frames(request)), BackwardResponse
    )
    assert back.session_id == sid and back.step == 0
    lower_grad = from_payload(back.grad, dtype=torch.float32)
    assert lower_grad.shape == (3, 6, HIDDEN) and bool(torch.isfinite(lower_grad).all())
    assert float(lower_grad.abs().sum()) > 0
    # the session's body LoRA took an optimizer step; the shared model did not change
    assert any(not torch.equal(body_before[k], v) for k, v in stepper.state.items())
    assert edge.state.bytes_in > 0
    # the pending forward is consumed: a second backward for the step is refused
    assert_error(await edge.post_frames(sid, "backward", frames(request)), 409, "conflict")


async def test_inference_forward_keeps_no_graph(edge: Edge) -> None:
    sid = await edge.open()
    reply: ForwardResponse = unframe(
        await edge.post_frames(sid, "forward", frames(forward_request(sid)), query="?inference=true"),
        ForwardResponse,
    )
    assert from_payload(reply.activations).shape == (2, 5, HIDDEN)
    grad = BackwardRequest(session_id=sid, step=0, grad=to_payload(torch.ones(2, 5, HIDDEN), "fp32"))
    assert_error(await edge.post_frames(sid, "backward", frames(grad)), 409, "conflict")


def _nan_x() -> torch.Tensor:
    x = activations()
    x[0, 0, 0] = float("nan")
    return x


def _inconsistent(sid: str) -> bytes:
    good = forward_request(sid)
    bad = TensorPayload.model_construct(dtype="float32", shape=(2, 5, HIDDEN), data=b"\x00" * 12)
    return frames(good.model_copy(update={"activations": bad}))


BAD_FORWARDS: dict[str, tuple[Any, int, str]] = {
    "garbage": (lambda sid: b"\x00\x00\x00\x05hello", 400, "decode_error"),
    "empty body": (lambda sid: b"", 409, "conflict"),
    "truncated": (lambda sid: frames(forward_request(sid))[:-7], 400, "decode_error"),
    "length prefix past the limit": (
        lambda sid: (MAX_BODY * 2).to_bytes(4, "big") + b"x",
        413,
        "payload_too_large",
    ),
    # a msgpack document read as a frame stream: its first bytes announce a huge frame
    "plain msgpack instead of frames": (lambda sid: encode(forward_request(sid)), 413, "payload_too_large"),
    "another message kind": (
        lambda sid: frames(BackwardRequest(session_id=sid, step=0, grad=to_payload(activations(), "fp32"))),
        400,
        "decode_error",
    ),
    "two messages": (lambda sid: frames(forward_request(sid)) * 2, 409, "conflict"),
    "wrong hidden size": (
        lambda sid: frames(forward_request(sid, x=activations(hidden=HIDDEN + 1))),
        422,
        "bad_tensor",
    ),
    "two-dimensional activations": (
        lambda sid: frames(
            forward_request(sid, x=torch.zeros(2, HIDDEN), mask=torch.ones(2, HIDDEN, dtype=torch.uint8))
        ),
        422,
        "bad_tensor",
    ),
    "nan activations": (lambda sid: frames(forward_request(sid, x=_nan_x())), 422, "bad_tensor"),
    "empty batch": (
        lambda sid: frames(
            forward_request(sid, x=torch.zeros(0, 5, HIDDEN), mask=torch.ones(0, 5, dtype=torch.uint8))
        ),
        422,
        "bad_tensor",
    ),
    "empty sequence": (
        lambda sid: frames(
            forward_request(sid, x=torch.zeros(2, 0, HIDDEN), mask=torch.ones(2, 0, dtype=torch.uint8))
        ),
        422,
        "bad_tensor",
    ),
    "inconsistent tensor": (_inconsistent, 422, "bad_tensor"),
    "mask of another shape": (
        lambda sid: frames(forward_request(sid, mask=torch.ones(2, 4, dtype=torch.uint8))),
        422,
        "bad_tensor",
    ),
    "mask not 0/1": (
        lambda sid: frames(forward_request(sid, mask=torch.full((2, 5), 2, dtype=torch.uint8))),
        422,
        "bad_tensor",
    ),
    "session id of another session": (lambda sid: frames(forward_request("s-someone-else")), 409, "conflict"),
    "oversized": (
        lambda sid: frames(forward_request(sid, x=activations(batch=64, seq=40))),
        413,
        "payload_too_large",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FORWARDS))
async def test_bad_forward_is_refused_and_changes_nothing(edge: Edge, case: str) -> None:
    build, status, code = BAD_FORWARDS[case]
    sid = await edge.open()
    stepper = edge.served.edge_round.sessions[DEVICES[0]]
    before = {k: v.detach().clone() for k, v in stepper.state.items()}
    assert_error(await edge.post_frames(sid, "forward", build(sid)), status, code)
    assert all(torch.equal(before[k], v) for k, v in stepper.state.items())
    assert edge.state.bytes_in == 0
    # no forward is pending
    grad = BackwardRequest(session_id=sid, step=0, grad=to_payload(activations(), "fp32"))
    assert_error(await edge.post_frames(sid, "backward", frames(grad)), 409, "conflict", mentions="pending")
    # the session still works
    unframe(await edge.post_frames(sid, "forward", frames(forward_request(sid))), ForwardResponse)


async def test_backward_without_forward_is_409(edge: Edge) -> None:
    sid = await edge.open()
    request = BackwardRequest(session_id=sid, step=0, grad=to_payload(activations(), "fp32"))
    assert_error(
        await edge.post_frames(sid, "backward", frames(request)), 409, "conflict", mentions="pending"
    )


async def test_backward_without_a_session_is_404(edge: Edge) -> None:
    sid = await edge.open()
    del edge.served.edge_round.sessions[DEVICES[0]]  # e.g. dropped at an edge-round deadline
    request = BackwardRequest(session_id=sid, step=0, grad=to_payload(activations(), "fp32"))
    assert_error(await edge.post_frames(sid, "backward", frames(request)), 404, "not_found")


BAD_BACKWARDS: dict[str, tuple[Any, int, str]] = {
    "wrong step": (
        lambda sid: BackwardRequest(session_id=sid, step=1, grad=to_payload(activations(), "fp32")),
        409,
        "conflict",
    ),
    "session id of another session": (
        lambda sid: BackwardRequest(session_id="s-other", step=0, grad=to_payload(activations(), "fp32")),
        409,
        "conflict",
    ),
    "grad of another batch shape": (
        lambda sid: BackwardRequest(session_id=sid, step=0, grad=to_payload(activations(batch=3), "fp32")),
        422,
        "bad_tensor",
    ),
    "grad of another hidden size": (
        lambda sid: BackwardRequest(session_id=sid, step=0, grad=to_payload(activations(hidden=8), "fp32")),
        422,
        "bad_tensor",
    ),
    "nan grad": (
        lambda sid: BackwardRequest(session_id=sid, step=0, grad=to_payload(_nan_x(), "fp32")),
        422,
        "bad_tensor",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BACKWARDS))
async def test_bad_backward_is_refused_and_keeps_the_pending_forward(edge: Edge, case: str) -> None:
    build, status, code = BAD_BACKWARDS[case]
    sid = await edge.open()
    unframe(await edge.post_frames(sid, "forward", frames(forward_request(sid))), ForwardResponse)
    stepper = edge.served.edge_round.sessions[DEVICES[0]]
    before = {k: v.detach().clone() for k, v in stepper.state.items()}
    assert_error(await edge.post_frames(sid, "backward", frames(build(sid))), status, code)
    assert all(torch.equal(before[k], v) for k, v in stepper.state.items())
    # the forward is still pending: the right gradient completes the step
    good = BackwardRequest(session_id=sid, step=0, grad=to_payload(activations(), "fp32"))
    back: BackwardResponse = unframe(await edge.post_frames(sid, "backward", frames(good)), BackwardResponse)
    assert from_payload(back.grad).shape == (2, 5, HIDDEN)


# ----------------------------------------------------------------------------- updates, models


def _wrong_shape(edge: Edge) -> dict[str, torch.Tensor]:
    delta = device_delta(edge)
    key = sorted(delta)[0]
    delta[key] = torch.zeros(delta[key].numel() + 1)  # its sketch has another length
    return delta


def _inf_table(edge: Edge) -> bytes:
    good = device_update(edge)
    key = sorted(good.sketches)[0]
    table = from_payload(good.sketches[key].table, dtype=torch.float32)
    table.view(-1)[0] = float("inf")
    bad = good.sketches[key].model_copy(update={"table": to_payload(table, "fp32")})
    return encode(good.model_copy(update={"sketches": {**good.sketches, key: bad}}))


def _missing_key(edge: Edge) -> dict[str, torch.Tensor]:
    delta = device_delta(edge)
    del delta[edge.device_keys()[0]]
    return delta


def _body_key(edge: Edge) -> dict[str, torch.Tensor]:
    start = edge.served.edge_round.start
    body_key = edge.served.model.segments(edge.served.config.split_params()).edge_keys()[0]
    return {**device_delta(edge), body_key: torch.full_like(start[body_key], 0.01)}


BAD_UPDATES: dict[str, tuple[Any, dict[str, Any], int, str]] = {
    # name: (body builder, submit kwargs, status, code)
    "not msgpack": (lambda e: b"\xc1\xc1", {}, 400, "decode_error"),
    "frames instead of msgpack": (lambda e: frames(device_update(e)), {}, 400, "decode_error"),
    "missing key": (lambda e: encode(device_update(e, delta=_missing_key(e))), {}, 409, "adapter_mismatch"),
    "extra body key": (lambda e: encode(device_update(e, delta=_body_key(e))), {}, 409, "adapter_mismatch"),
    "wrong shape": (
        lambda e: encode(device_update(e, delta=_wrong_shape(e))),
        {},
        409,
        "geometry_mismatch",
    ),
    "inf value": (_inf_table, {}, 422, "bad_tensor"),
    "sketch of another round": (
        lambda e: encode(device_update(e, sketch_round=2)),
        {},
        409,
        "geometry_mismatch",
    ),
    "another run seed": (lambda e: encode(device_update(e, seed=99)), {}, 409, "geometry_mismatch"),
    "another device's update": (lambda e: encode(device_update(e, node_id=DEVICES[1])), {}, 409, "conflict"),
    "another run": (lambda e: encode(device_update(e, run_id="other")), {}, 409, "conflict"),
    "another round": (lambda e: encode(device_update(e, round=2)), {}, 409, "conflict"),
    "edge round out of range": (lambda e: encode(device_update(e)), {"edge_round": 2}, 409, "conflict"),
    "negative edge round": (lambda e: encode(device_update(e)), {"edge_round": -1}, 422, "invalid_request"),
    "oversized": (lambda e: bytes(MAX_BODY + 10), {}, 413, "payload_too_large"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPDATES))
async def test_bad_update_is_refused_and_records_nothing(edge: Edge, case: str) -> None:
    build, kwargs, status, code = BAD_UPDATES[case]
    sid = await edge.open()
    assert_error(await edge.submit(sid, build(edge), **kwargs), status, code)
    assert edge.served.edge_round.submissions.get(0, {}) == {}
    assert edge.served.edge_round.models == {}
    assert (await edge.model(sid, 0)).status_code == 204
    assert (await edge.submit(sid, encode(device_update(edge)))).status_code == 200


async def test_replayed_update_is_409(edge: Edge) -> None:
    sid = await edge.open()
    await edge.open(DEVICES[1])  # so that one submission does not complete the edge round
    assert (await edge.submit(sid, encode(device_update(edge)))).status_code == 200
    recorded = edge.served.edge_round.submissions[0][DEVICES[0]]
    replay = await edge.submit(sid, encode(device_update(edge, num_examples=99)))
    assert_error(replay, 409, "conflict", mentions="already submitted")
    assert edge.served.edge_round.submissions[0][DEVICES[0]] is recorded


async def test_edge_model_long_poll(edge: Edge) -> None:
    sids = {d: await edge.open(d) for d in DEVICES}
    served = edge.served.edge_round
    start = served.start
    keys = edge.device_keys()
    sent = {
        DEVICES[0]: (device_delta(edge, 1.0), 1),
        DEVICES[1]: (device_delta(edge, 4.0), 3),
    }
    assert (await edge.model(sids[DEVICES[0]], 0)).status_code == 204
    first, n0 = sent[DEVICES[0]]
    response = await edge.submit(sids[DEVICES[0]], encode(device_update(edge, delta=first, num_examples=n0)))
    assert response.status_code == 200 and response.json() == {"ok": True}
    # one of two devices submitted: still not aggregated
    waited = await edge.model(sids[DEVICES[0]], 0)
    assert waited.status_code == 204 and waited.content == b""
    second, n1 = sent[DEVICES[1]]
    update = device_update(edge, delta=second, num_examples=n1, node_id=DEVICES[1])
    assert (await edge.submit(sids[DEVICES[1]], encode(update), device=DEVICES[1])).status_code == 200

    # example-weighted mean of the deltas: (1 * 1 + 3 * 4) / 4 = 3.25, merged in sketch space
    mean = {k: torch.full_like(start[k], 3.25) for k in keys}
    expected = apply_sketches(start, sketch_state(mean, served.sketch, 1, served.seed), served.sketch)
    cluster_model = served.models[0][0]
    params, seed = edge.served.config.sketch_params(), edge.served.config.seed
    for device, sid in sids.items():
        got = await edge.model(sid, 0, device=device)
        assert got.status_code == 200 and got.headers["content-type"] == "application/msgpack"
        broadcast = decode(got.content, AdapterBroadcast)
        assert broadcast.run_id == RUN and broadcast.round == 1 and broadcast.version == 0
        assert broadcast.base_version == edge.served.version == 0
        assert sorted(broadcast.sketches) == sorted(keys) and broadcast.tensors == {}
        assert any(not p.dense for p in broadcast.sketches.values())  # some keys truly sketched
        # the device rebuilds its cluster's model bit for bit from the round's start
        rebuilt = read_broadcast(broadcast, start, params, seed)
        for k in keys:
            assert torch.equal(rebuilt[k], cluster_model[k]), k
            torch.testing.assert_close(rebuilt[k], expected[k])
            if broadcast.sketches[k].dense:  # exact tables: exactly start + 3.25
                torch.testing.assert_close(rebuilt[k], start[k] + 3.25)
    late = await edge.submit(sids[DEVICES[0]], encode(device_update(edge)))
    assert_error(late, 409, "conflict", mentions="already aggregated")
    assert edge.served.uploaded is False  # edge round 0 of 2: nothing goes to the cloud yet


async def test_model_long_poll_parameters(edge: Edge) -> None:
    sid = await edge.open()
    for params in ({"edge_round": 0, "wait_s": 121}, {"edge_round": -1}, {}):
        response = await edge.client.get(
            f"/v1/sessions/{sid}/model", params=params, headers=edge.auth(DEVICES[0])
        )
        assert_error(response, 422, "invalid_request")


async def test_last_edge_round_with_the_cloud_unreachable(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    sids = {d: await edge.open(d) for d in DEVICES}
    for edge_round in (0, 1):
        for device, sid in sids.items():
            update = device_update(edge, node_id=device)
            response = await edge.submit(sid, encode(update), edge_round=edge_round, device=device)
            assert response.status_code == 200, response.text
    # the devices' updates were taken and aggregated; the upload waits for the cloud
    got = await edge.model(sids[DEVICES[0]], 1)
    assert got.status_code == 200
    assert sorted(decode(got.content, AdapterBroadcast).sketches) == sorted(edge.device_keys())
    status = (await edge.client.get("/v1/status")).json()
    assert status["runs"][RUN]["aggregated_edge_rounds"] == [0, 1]
    assert status["runs"][RUN]["uploaded"] is False
    assert status["last_error"] is not None and "unavailable" in status["last_error"]
    assert (await edge.client.get("/health")).status_code == 200
    # once the cloud answers again, the worker's retry uploads the kept model
    sent: list[AdapterUpdate] = []

    def accept(run_id: str, round_index: int, update: AdapterUpdate) -> int:
        assert (run_id, round_index) == (RUN, 1)
        sent.append(update)
        return 1

    monkeypatch.setattr(edge.app.state.cloud, "upload_edge_model", accept)
    edge.app.state.worker.retry_uploads()
    assert edge.served.uploaded is True
    assert len(sent) == 1 and sent[0].num_examples == 2 * 4
    # the sketched upload covers every adapter key (device head/tail and edge body), each in
    # the round's geometry, and decodes to the edge model
    served = edge.served
    keys = served.model.adapter_keys()
    assert sorted(sent[0].sketches) == sorted(keys)
    uploaded = read_update(sent[0], served.edge_round.start, served.config, keys=keys)
    model, _, _ = served.edge_round.final_model()
    rebuilt = apply_sketches(served.edge_round.start, uploaded, served.config.sketch_params())
    for key in keys:
        torch.testing.assert_close(rebuilt[key], model[key])
    edge.app.state.worker.retry_uploads()
    assert len(sent) == 1
